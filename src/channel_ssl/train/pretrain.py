"""Self-supervised pretraining of one run (``channel-ssl pretrain``): DINOv2, DINOv1 or MAE.

Usage::

    channel-ssl pretrain --corpus corpus.parquet --run-config run.json --out-dir runs/P-BoC-L \
        [--device auto|cpu|cuda] [--threads N]

``--run-config`` is a JSON file or a JSON string (:class:`RunConfig` lists the keys and their
paper defaults). Outputs: ``<out-dir>/checkpoints/ckpt-<iteration>.pt`` every
``checkpoint_every`` iterations and ``<out-dir>/checkpoint.pt`` at the end (schema in
``train/checkpoint.py``). A run restarts from its newest ``ckpt-*.pt`` automatically.

Objectives (run config ``objective``):

- ``dino`` (DINOv2): DINO loss on CLS tokens over (teacher global view, student view) pairs of
  different crops, iBOT loss on the masked patches of the student's global crops against the
  teacher's unmasked view, KoLeo on the student's global-crop CLS tokens; EMA teacher.
  Hierarchical attention adds DINO and KoLeo terms on every channel CLS token with the weight
  of the global CLS terms (paper appendix C), unless ``ha_channel_losses`` is false.
- ``dinov1`` (the CellDINOv1 baseline): the same multi-crop DINO CLS loss and EMA teacher,
  without iBOT (no masking) and without KoLeo, whatever their weights say; heads unchanged.
- ``mae`` (MAE-BoC, the Microsnoop proxy): one random-resized crop of ``global_crops_size``
  (``global_crops_scale``) per sample; the encoder sees only the visible patches (``mae.
  mask_ratio`` hidden uniformly at random per sample), a light decoder reconstructs the pixels
  of the hidden ones; loss = MSE on (per-patch normalised) pixels of the hidden patches. No
  teacher, no heads: the checkpoint's ``student`` and ``teacher`` entries both hold the encoder,
  so ``load_backbone`` and extraction work unchanged. Bag-of-channels and fixed families only.

The objective-specific parts (networks, loss, what happens around the optimiser step, the
checkpoint entries) live in :class:`DINOTraining` and :class:`MAETraining`; the loop, data,
schedules, checkpoints and resumption are shared.

Reproducibility: every random draw of iteration ``it`` (samples, crops, masks, channel subsets,
stochastic depth) comes from generators seeded with ``(seed, it, rank)``, so a resumed run
computes exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import random
import re
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from channel_ssl.data.augment import MaskGenerator, MultiCropAugmentation
from channel_ssl.data.shards import MANIFEST_COLUMNS, ShardStore
from channel_ssl.errors import UserError
from channel_ssl.losses import DINOLoss, IBOTPatchLoss, koleo_loss
from channel_ssl.losses.mae import mae_loss, patchify, random_patch_mask
from channel_ssl.models import FAMILIES, build_backbone
from channel_ssl.models.channel_sampling import draw_channel_subset, gather_channels
from channel_ssl.models.heads import HEAD_INITS, DINOHead
from channel_ssl.models.mae_decoder import MAEDecoder, MAENetwork, default_decoder_size
from channel_ssl.progress import ProgressLogger
from channel_ssl.train.checkpoint import (
    newest_readable_checkpoint,
    periodic_checkpoint_path,
    prune_checkpoints,
    remove_stale_temporaries,
    save_checkpoint,
)
from channel_ssl.train.collapse import CollapseMonitor, teacher_entropy
from channel_ssl.train.preemption import REQUEUE_EXIT, GracefulStop, StopRequested
from channel_ssl.train.schedules import TrainingSchedules, build_schedules

COMMAND = "pretrain"
HELP = "self-supervised pretraining of one run"
log = logging.getLogger("channel_ssl.pretrain")

# DINOv2 counts "epochs" of 1,250 iterations; the paper's 45,000 iterations are 36 of them and
# it warms up for 20. Derived iteration counts keep these proportions for any run length.
PAPER_EPOCHS = 36
WARMUP_EPOCHS = 20
JOINT_FAMILIES = ("cvit", "ha")
OBJECTIVES = ("dino", "dinov1", "mae")
MAE_FAMILIES = ("boc", "fixed")  # single patch projection: visible patches can be dropped


# ---------------------------------------------------------------------------------- config
@dataclass
class ModelConfig:
    family: str = "boc"
    arch: str = "vit_large"
    patch_size: int | None = None
    drop_path: float = 0.1
    layerscale: float | None = 1e-5
    k_max: int = 5
    in_chans: int = 1


@dataclass
class DinoConfig:
    n_prototypes: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    nlayers: int = 3
    head_init: str = "dinov2"
    loss_weight: float = 1.0
    koleo_loss_weight: float = 0.1
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_iterations: int | None = None  # None: 20 epochs (iterations / 36 each)
    centering: str = "centering"
    center_momentum: float = 0.9


@dataclass
class IbotConfig:
    loss_weight: float = 1.0
    mask_ratio_min_max: list[float] = field(default_factory=lambda: [0.1, 0.5])
    mask_sample_probability: float = 0.5
    separate_head: bool = False  # DINOv2 default: iBOT shares the DINO head


@dataclass
class MaeConfig:
    """MAE objective. Decoder sizes left None follow ``default_decoder_size(embed_dim)``
    (MAE's 512 wide / 8 blocks / 16 heads for ViT-S/L, a 2-block decoder for ``micro``)."""

    mask_ratio: float = 0.75
    decoder_dim: int | None = None
    decoder_depth: int | None = None
    decoder_heads: int | None = None
    norm_pix_loss: bool = True


@dataclass
class TeacherConfig:
    momentum: float = 0.996
    final_momentum: float = 1.0


@dataclass
class CropsConfig:
    global_crops_number: int = 2
    global_crops_size: int = 224
    global_crops_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])
    local_crops_number: int = 8
    local_crops_size: int = 96
    local_crops_scale: list[float] = field(default_factory=lambda: [0.005, 0.4])


@dataclass
class RunConfig:
    """One pretraining run. Defaults are the paper's / DINOv2's values (docs/paper.md section 2)."""

    run: str = ""
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: str = "dino"
    channel_sampling: str = "none"
    ha_channel_losses: bool = True
    iterations: int = 45000
    batch_size: int = 1024
    lr: float = 5e-4
    lr_ref_batch: int = 1024
    lr_scaling: str = "sqrt"  # DINOv2: lr x sqrt(batch / ref); MAE: "linear"
    min_lr: float = 1e-6
    warmup_iterations: int | None = None  # None: 20 of 36 epochs, an epoch = iterations / 36
    weight_decay: float = 0.04
    weight_decay_end: float = 0.2
    clip_grad: float = 3.0
    layerwise_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    freeze_last_layer_iterations: int | None = None  # None: one epoch (iterations / 36)
    boc_pixel_budget: bool = True
    dino: DinoConfig = field(default_factory=DinoConfig)
    ibot: IbotConfig = field(default_factory=IbotConfig)
    mae: MaeConfig = field(default_factory=MaeConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    crops: CropsConfig = field(default_factory=CropsConfig)
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3  # periodic checkpoints kept (newest); the final one always
    log_every: int = 10
    num_workers: int = 0
    precision: str = "fp32"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _from_dict(cls, data: Any, where: str):
    """Build dataclass ``cls`` from ``data``; UserError naming any unknown key by its path."""
    if not isinstance(data, dict):
        raise UserError(f"run config: {where or 'top level'} must be a JSON object, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        names = ", ".join(f"'{where}{k}'" for k in unknown)
        raise UserError(f"run config: unknown key(s) {names}; valid keys here: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        default = (
            fields[name].default_factory()
            if fields[name].default_factory is not dataclasses.MISSING
            else None
        )
        if dataclasses.is_dataclass(default):
            kwargs[name] = _from_dict(type(default), value, f"{where}{name}.")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise UserError(f"run config: '{key}' {message}")


def validate_run_config(cfg: RunConfig) -> None:
    """UserError naming the key of the first invalid value."""
    _require(
        cfg.model.family in FAMILIES,
        "model.family",
        f"is {cfg.model.family!r}; valid: {', '.join(FAMILIES)}",
    )
    _require(
        cfg.objective in OBJECTIVES,
        "objective",
        f"is {cfg.objective!r}; valid: {', '.join(OBJECTIVES)}",
    )
    if cfg.objective == "mae":
        _require(
            cfg.model.family in MAE_FAMILIES,
            "model.family",
            f"is {cfg.model.family!r}; the 'mae' objective trains {', '.join(MAE_FAMILIES)}",
        )
        _require(0 < cfg.mae.mask_ratio < 1, "mae.mask_ratio", "must be in (0, 1)")
        for key in ("decoder_dim", "decoder_depth", "decoder_heads"):
            value = getattr(cfg.mae, key)
            _require(value is None or int(value) >= 1, f"mae.{key}", "must be >= 1 or null")
    _require(
        cfg.channel_sampling == "none" or cfg.model.family in JOINT_FAMILIES,
        "channel_sampling",
        f"is {cfg.channel_sampling!r} but model.family {cfg.model.family!r} has no joint "
        f"channel axis to sample; hcs applies to {', '.join(JOINT_FAMILIES)}",
    )
    _require(
        cfg.channel_sampling in ("none", "hcs"),
        "channel_sampling",
        f"is {cfg.channel_sampling!r}; valid: none, hcs",
    )
    _require(
        cfg.dino.head_init in HEAD_INITS,
        "dino.head_init",
        f"is {cfg.dino.head_init!r}; valid: {', '.join(HEAD_INITS)}",
    )
    _require(
        cfg.precision in ("fp32", "bf16"), "precision", f"is {cfg.precision!r}; valid: fp32, bf16"
    )
    _require(
        cfg.lr_scaling in ("sqrt", "linear"),
        "lr_scaling",
        f"is {cfg.lr_scaling!r}; valid: sqrt, linear",
    )
    _require(
        cfg.dino.centering in ("centering", "sinkhorn_knopp"),
        "dino.centering",
        f"is {cfg.dino.centering!r}; valid: centering, sinkhorn_knopp",
    )
    for key in (
        "iterations",
        "batch_size",
        "lr_ref_batch",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
    ):
        _require(int(getattr(cfg, key)) >= 1, key, "must be >= 1")
    _require(cfg.crops.global_crops_number >= 1, "crops.global_crops_number", "must be >= 1")
    _require(
        cfg.crops.global_crops_number + cfg.crops.local_crops_number >= 2,
        "crops.local_crops_number",
        "must give at least 2 crops in all (DINO compares different views)",
    )
    _require(len(cfg.betas) == 2, "betas", "must be a list of 2 numbers")
    _require(len(cfg.ibot.mask_ratio_min_max) == 2, "ibot.mask_ratio_min_max", "must be [min, max]")


def load_run_config(source: str | dict) -> RunConfig:
    """A :class:`RunConfig` from a dict, a JSON string or the path of a JSON file."""
    if isinstance(source, dict):
        data = source
    else:
        text = source
        stripped = source.strip()
        if not stripped.startswith("{"):
            path = Path(source)
            if not path.exists():
                raise FileNotFoundError(
                    f"run config {path} does not exist (nor is it a JSON object)"
                )
            text = path.read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"run config {source[:80]!r} is not valid JSON: {exc}") from exc
    cfg = _from_dict(RunConfig, data, "")
    validate_run_config(cfg)
    return cfg


# ---------------------------------------------------------------------------------- corpus
CORPUS_COLUMNS = MANIFEST_COLUMNS + ["shard_dir", "weight"]


def load_corpus(path: str | os.PathLike) -> pd.DataFrame:
    """Read the corpus table; ``shard_dir`` made absolute; checks columns and weights."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus {path} does not exist")
    corpus = pd.read_parquet(path)
    missing = [c for c in CORPUS_COLUMNS if c not in corpus.columns]
    if missing:
        raise UserError(f"corpus {path} lacks column(s) {missing}")
    if len(corpus) == 0:
        raise UserError(f"corpus {path} has no rows")
    weights = corpus["weight"].to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
    if bad.size:
        raise UserError(f"corpus {path}: row {int(bad[0])} has invalid weight {weights[bad[0]]!r}")
    if weights.sum() <= 0:
        raise UserError(f"corpus {path}: the weights sum to 0")
    base = path.resolve().parent
    corpus = corpus.reset_index(drop=True).copy()
    corpus["shard_dir"] = [
        str(d if Path(d).is_absolute() else base / d) for d in corpus["shard_dir"]
    ]
    return corpus


def mean_channels(corpus: pd.DataFrame) -> float:
    """Expected K of a sampled image: the sampling-weighted mean of ``n_channels``.

    With balanced sampling this is what a joint model sees per image, so a BoC run that
    multiplies its iterations by it sees as many pixels.
    """
    weights = corpus["weight"].to_numpy(dtype=np.float64)
    return float((weights * corpus["n_channels"].to_numpy(dtype=np.float64)).sum() / weights.sum())


def iteration_seed(seed: int, iteration: int, rank: int, stream: int) -> int:
    """A 63-bit seed for one random stream of one iteration on one rank."""
    sequence = np.random.SeedSequence([int(seed), int(iteration), int(rank), int(stream)])
    return int(sequence.generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


def weighted_draws(cumulative: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` indices drawn with replacement, P(i) proportional to the weights whose running
    sum is ``cumulative`` (float64). Unlike ``torch.multinomial`` (at most 2**24 categories)
    this has no limit on the number of categories: ExtendedCHAMMI has ~7.7 M images."""
    total = cumulative[-1]
    u = torch.rand(n, generator=generator, dtype=torch.float64) * total
    return torch.searchsorted(cumulative, u, right=True).clamp_(max=len(cumulative) - 1)


class CorpusSampler:
    """Weighted sampling with replacement of a batch homogeneous in K.

    Joint families (cvit, ha, fixed): units are rows; the K-group is drawn by its total weight,
    then rows within it. BoC: units are (row, channel) pairs carrying weight / K each, all of
    one group; drawn as a row by its weight, then one of its K channels uniformly (the same
    distribution, without materialising the ~35 M pairs of ExtendedCHAMMI).
    ``draw(n, generator)`` -> ``(rows, channels)``; ``channels`` is None for joint families.
    """

    def __init__(self, corpus: pd.DataFrame, family: str, in_chans: int = 1):
        self.bag_of_channels = family == "boc"
        weights = corpus["weight"].to_numpy(dtype=np.float64)
        n_channels = corpus["n_channels"].to_numpy(dtype=np.int64)
        if family == "fixed":
            wrong = np.flatnonzero(n_channels != in_chans)
            if wrong.size:
                raise UserError(
                    f"corpus row {int(wrong[0])} has {int(n_channels[wrong[0]])} channels but the "
                    f"fixed-channel model takes model.in_chans={in_chans}"
                )
        # (rows of the group, running sum of their weights)
        self.groups: list[tuple[torch.Tensor, torch.Tensor]] = []
        if self.bag_of_channels:
            self.n_channels = torch.tensor(n_channels)
            self.groups.append((torch.arange(len(corpus)), torch.from_numpy(np.cumsum(weights))))
        else:
            for k in sorted(set(n_channels.tolist())):
                rows = np.flatnonzero(n_channels == k)
                self.groups.append(
                    (torch.from_numpy(rows), torch.from_numpy(np.cumsum(weights[rows])))
                )
        self.group_weights = torch.tensor(
            [float(g[1][-1]) for g in self.groups], dtype=torch.float64
        )
        if float(self.group_weights.sum()) <= 0:
            raise UserError("corpus: all sampling weights are 0")

    def draw(self, n: int, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        group = int(torch.multinomial(self.group_weights, 1, generator=generator))
        rows, cumulative = self.groups[group]
        picks = rows[weighted_draws(cumulative, n, generator)]
        if not self.bag_of_channels:
            return picks.numpy(), None
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        channels = (u * self.n_channels[picks]).long().clamp_(max=self.n_channels[picks] - 1)
        return picks.numpy(), channels.numpy()


class PretrainBatches(torch.utils.data.Dataset):
    """Item ``it`` is the whole (per-rank) batch of iteration ``it``; pure function of ``it``.

    Batch dict:
        global: float ``(n_global * B, K, Sg, Sg)`` (crop-major: all samples of crop 0, then 1)
        local: float ``(n_local * B, K, Sl, Sl)`` or None
        masks: bool ``(n_global * B, M)``, M = K*N for joint models (channel-major), N otherwise:
            iBOT masks (``dino``), MAE masks (``mae``; n_global = 1, no local crops) or None
            (``dinov1``)
        channel_ids: long ``(B, K)`` kept channel positions (Channel-ViT with HCS) or None
        n_images: B
    """

    def __init__(
        self,
        corpus: pd.DataFrame,
        cfg: RunConfig,
        *,
        local_batch: int,
        total_iterations: int,
        patch_size: int,
        rank: int = 0,
    ):
        self.corpus = corpus
        self.cfg = cfg
        self.local_batch = local_batch
        self.total_iterations = total_iterations
        self.rank = rank
        self.family = cfg.model.family
        self.sampler = CorpusSampler(corpus, self.family, cfg.model.in_chans)
        crops = cfg.crops
        self.objective = cfg.objective
        # MAE: a single random-resized crop at the global size, no local crops
        self.n_global = 1 if self.objective == "mae" else crops.global_crops_number
        self.n_local = 0 if self.objective == "mae" else crops.local_crops_number
        self.augment = MultiCropAugmentation(
            self.n_global,
            crops.global_crops_size,
            tuple(crops.global_crops_scale),
            self.n_local,
            crops.local_crops_size,
            tuple(crops.local_crops_scale),
        )
        grid = crops.global_crops_size // patch_size
        self.n_patches = grid * grid
        self.masks = MaskGenerator(
            (grid, grid),
            tuple(cfg.ibot.mask_ratio_min_max),
            cfg.ibot.mask_sample_probability,
        )
        self.shard_dirs = corpus["shard_dir"].tolist()
        self.shards = corpus["shard"].tolist()
        self.offsets = corpus["offset"].to_numpy()
        self._stores: dict[str, ShardStore] = {}

    def __len__(self) -> int:
        return self.total_iterations

    def _image(self, row: int) -> np.ndarray:
        directory = self.shard_dirs[row]
        store = self._stores.get(directory)
        if store is None:
            store = self._stores[directory] = ShardStore(directory)
        return store.get(self.shards[row], int(self.offsets[row]))

    def __getitem__(self, iteration: int) -> dict:
        seed = self.cfg.seed
        generator = torch.Generator().manual_seed(iteration_seed(seed, iteration, self.rank, 0))
        rng = np.random.default_rng(iteration_seed(seed, iteration, self.rank, 1))
        rows, channels = self.sampler.draw(self.local_batch, generator)
        views = []
        for index, row in enumerate(rows):
            image = self._image(int(row))
            if channels is not None:
                image = image[channels[index] : channels[index] + 1]
            views.append(self.augment(image, rng))
        n_global, n_local = self.n_global, self.n_local
        global_crops = torch.stack(
            [torch.stack([v["global"][c] for v in views]) for c in range(n_global)]
        )
        local_crops = (
            torch.stack([torch.stack([v["local"][c] for v in views]) for c in range(n_local)])
            if n_local
            else None
        )
        channel_ids = None
        if self.cfg.channel_sampling == "hcs" and self.family in JOINT_FAMILIES:
            # one subset per sample, shared by all its crops (teacher and student agree)
            channel_ids = draw_channel_subset(self.local_batch, global_crops.shape[2], generator)
            global_crops = torch.stack([gather_channels(c, channel_ids) for c in global_crops])
            if local_crops is not None:
                local_crops = torch.stack([gather_channels(c, channel_ids) for c in local_crops])
            if self.family != "cvit":
                channel_ids = None  # only Channel-ViT looks up channel embeddings by position
        n_channels = global_crops.shape[2]
        mask_channels = n_channels if self.family in JOINT_FAMILIES else 1
        if self.objective == "mae":
            masks = random_patch_mask(
                self.local_batch, self.n_patches, self.cfg.mae.mask_ratio, rng
            )
        elif self.objective == "dinov1":
            masks = None  # DINOv1 has no masked-patch loss: the student sees whole crops
        else:
            masks = torch.cat(
                [self.masks.generate(self.local_batch, rng, mask_channels) for _ in range(n_global)]
            )
        return {
            "global": global_crops.flatten(0, 1),
            "local": None if local_crops is None else local_crops.flatten(0, 1),
            "masks": masks,
            "channel_ids": channel_ids,
            "n_images": self.local_batch,
        }


# ----------------------------------------------------------------------------------- model
class SSLNetwork(nn.Module):
    """Backbone + DINO head (+ iBOT head). One ``forward`` for all crops (one DDP call).

    ``forward(global_crops, local_crops=None, masks=None, channel_ids=None,
    with_channel_tokens=False, mask_input=True)``: ``masks`` (bool ``(n_global * B, M)``) marks
    the patches replaced by the mask token (if ``mask_input``) and where patch logits are read
    (always; the teacher reads them on its unmasked view). Returns a dict:
        cls: ``(n_global * B, D)`` backbone CLS of the global crops (for KoLeo)
        cls_logits: ``(n_crops * B, P)`` head output of every crop's CLS (global crops first)
        patch_logits: ``(n_masked, P)`` head output at ``masks`` (only if masks is given)
        channel_cls: ``(n_global * B, K, D)`` and channel_logits ``(n_crops * B, K, P)`` (HA)
    """

    def __init__(self, backbone: nn.Module, dino_head: DINOHead, ibot_head: DINOHead | None = None):
        super().__init__()
        self.backbone = backbone
        self.dino_head = dino_head
        self.ibot_head = ibot_head

    def _backbone(self, x, masks, channel_ids):
        if channel_ids is None:
            return self.backbone(x, masks=masks)
        repeats = x.shape[0] // channel_ids.shape[0]
        return self.backbone(x, masks=masks, channel_ids=channel_ids.repeat(repeats, 1))

    def forward(
        self,
        global_crops: torch.Tensor,
        local_crops: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
        channel_ids: torch.Tensor | None = None,
        with_channel_tokens: bool = False,
        mask_input: bool = True,
    ) -> dict:
        outputs = [self._backbone(global_crops, masks if mask_input else None, channel_ids)]
        if local_crops is not None:
            outputs.append(self._backbone(local_crops, None, channel_ids))
        cls = torch.cat([o["cls"] for o in outputs])
        result = {"cls": outputs[0]["cls"], "cls_logits": self.dino_head(cls)}
        if masks is not None:
            head = self.ibot_head or self.dino_head
            result["patch_logits"] = head(outputs[0]["patch"][masks])
        if with_channel_tokens:
            channel_cls = torch.cat([o["channel_cls"] for o in outputs])
            result["channel_cls"] = outputs[0]["channel_cls"]
            result["channel_logits"] = self.dino_head(channel_cls)
        return result


def build_run_backbone(cfg: RunConfig, *, drop_path: float) -> nn.Module:
    """The backbone a run trains (position embeddings built for ``global_crops_size``)."""
    model = cfg.model
    return build_backbone(
        model.family,
        model.arch,
        img_size=cfg.crops.global_crops_size,
        patch_size=model.patch_size,
        drop_path_rate=drop_path,
        layerscale_init=model.layerscale,
        k_max=model.k_max,
        in_chans=model.in_chans,
    )


def build_network(cfg: RunConfig, *, drop_path: float) -> SSLNetwork:
    """Backbone + heads of a run (student: drop_path from config; teacher: 0)."""
    backbone = build_run_backbone(cfg, drop_path=drop_path)
    d = cfg.dino

    def head():
        return DINOHead(
            backbone.embed_dim,
            d.n_prototypes,
            d.hidden_dim,
            d.bottleneck_dim,
            d.nlayers,
            init=d.head_init,
        )

    return SSLNetwork(backbone, head(), head() if cfg.ibot.separate_head else None)


_BLOCK_INDEX = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def no_weight_decay(name: str) -> bool:
    """DINOv2's rule (``get_params_groups_with_decay``): biases, norms and LayerScale gammas
    only; position and channel embeddings, CLS/mask/channel tokens and prototypes decay."""
    return name.endswith(".bias") or "norm" in name or "gamma" in name


def parameter_groups(
    network: nn.Module, layerwise_decay: float, patch_embed_lr_mult: float
) -> list[dict]:
    """AdamW parameter groups with ``lr_mult``, ``wd_mult`` and ``is_last_layer`` entries.

    Layer-wise lr decay over the backbone: embeddings and tokens are layer 0, block i is layer
    i + 1, the final norm is layer n_blocks + 1; lr_mult = decay ** (n_blocks + 1 - layer).
    Patch-embedding weights get ``patch_embed_lr_mult`` on top. Heads: lr_mult 1. No weight
    decay on biases, norms and LayerScale gammas only (:func:`no_weight_decay`). The groups
    holding the prototypes are marked ``is_last_layer``: their lr is 0 while the last layer
    is frozen.
    ``network`` is an :class:`SSLNetwork` or an ``MAENetwork`` (its decoder counts as a head).
    """
    n_blocks = network.backbone.n_blocks
    groups: dict[tuple, dict] = {}
    for name, param in network.named_parameters():
        if not param.requires_grad:
            continue
        lr_mult, is_last_layer = 1.0, False
        if name.startswith("backbone."):
            inner = name[len("backbone.") :]
            match = _BLOCK_INDEX.search(inner)
            if match:
                layer = int(match.group(1)) + 1
            elif re.search(r"(?:^|\.)norm\.", inner):
                layer = n_blocks + 1
            else:
                layer = 0
            lr_mult = layerwise_decay ** (n_blocks + 1 - layer)
            if "patch_embed" in inner:
                lr_mult *= patch_embed_lr_mult
        elif name.endswith("prototypes"):
            is_last_layer = True
        wd_mult = 0.0 if no_weight_decay(name) else 1.0
        key = (lr_mult, wd_mult, is_last_layer)
        group = groups.setdefault(
            key,
            {"params": [], "lr_mult": lr_mult, "wd_mult": wd_mult, "is_last_layer": is_last_layer},
        )
        group["params"].append(param)
    return list(groups.values())


def clip_gradients(network: nn.Module, max_norm: float) -> list[float]:
    """Clip the gradient norm of each part of ``network`` separately (backbone, DINO head,
    iBOT head; backbone and decoder for MAE), as DINOv2 clips each student submodule; returns
    the norms before clipping."""
    norms = []
    for part in network.children():
        params = [p for p in part.parameters() if p.grad is not None]
        if params:
            norms.append(float(nn.utils.clip_grad_norm_(params, max_norm)))
    return norms


# ------------------------------------------------------------------------------ distributed
@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> DistInfo:
    """Start torch.distributed when launched by torchrun (WORLD_SIZE) or by SLURM (SLURM_NTASKS).

    Single process otherwise. Backend NCCL on CUDA, Gloo on CPU.
    """
    env = os.environ
    if int(env.get("WORLD_SIZE", "1")) > 1:
        info = DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))
    elif int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        info = DistInfo(
            int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", "0"))
        )
        env.setdefault("RANK", str(info.rank))
        env.setdefault("WORLD_SIZE", str(info.world_size))
        env.setdefault("LOCAL_RANK", str(info.local_rank))
        if "MASTER_ADDR" not in env:
            # the first node of the allocation hosts the rendezvous
            hosts = subprocess.run(
                ["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            env["MASTER_ADDR"] = hosts[0]
        env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
    else:
        return DistInfo()
    if device_kind == "cuda":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group("nccl" if device_kind == "cuda" else "gloo", init_method="env://")
    return info


# ------------------------------------------------------------------------------- training
@dataclass
class ResolvedRun:
    """Values derived from the config and the corpus."""

    total_iterations: int
    boc_iterations_multiplier: float
    lr: float
    warmup_iterations: int
    warmup_teacher_temp_iterations: int
    freeze_last_layer_iterations: int


def resolve_run(cfg: RunConfig, corpus: pd.DataFrame) -> ResolvedRun:
    multiplier = 1.0
    if cfg.boc_pixel_budget and cfg.model.family == "boc":
        multiplier = mean_channels(corpus)
    total = max(1, int(round(cfg.iterations * multiplier)))
    # An epoch is a fixed number of iterations (DINOv2: 1,250), the run's un-stretched length
    # / 36: BoC trains "a proportionally larger number of epochs", so its pixel budget makes
    # the run longer but leaves the warm-ups and the last-layer freeze as long as the others'.
    epoch = cfg.iterations / PAPER_EPOCHS

    def derived(value, epochs):
        return int(value) if value is not None else int(round(epoch * epochs))

    return ResolvedRun(
        total_iterations=total,
        boc_iterations_multiplier=multiplier,
        lr=cfg.lr
        * (
            cfg.batch_size / cfg.lr_ref_batch
            if cfg.lr_scaling == "linear"
            else math.sqrt(cfg.batch_size / cfg.lr_ref_batch)
        ),
        warmup_iterations=derived(cfg.warmup_iterations, WARMUP_EPOCHS),
        warmup_teacher_temp_iterations=derived(
            cfg.dino.warmup_teacher_temp_iterations, WARMUP_EPOCHS
        ),
        freeze_last_layer_iterations=derived(cfg.freeze_last_layer_iterations, 1),
    )


def make_schedules(cfg: RunConfig, resolved: ResolvedRun) -> TrainingSchedules:
    return build_schedules(
        iterations=resolved.total_iterations,
        lr=resolved.lr,
        min_lr=cfg.min_lr,
        warmup_iterations=resolved.warmup_iterations,
        weight_decay=cfg.weight_decay,
        weight_decay_end=cfg.weight_decay_end,
        momentum=cfg.teacher.momentum,
        final_momentum=cfg.teacher.final_momentum,
        teacher_temp=cfg.dino.teacher_temp,
        warmup_teacher_temp=cfg.dino.warmup_teacher_temp,
        warmup_teacher_temp_iterations=resolved.warmup_teacher_temp_iterations,
        freeze_last_layer_iterations=resolved.freeze_last_layer_iterations,
    )


class DINOv2Objective(nn.Module):
    """Loss modules (with their EMA centres) and the assembly of the total loss.

    With ``cfg.objective == "dinov1"`` only the DINO CLS terms are computed (no iBOT, no KoLeo).
    """

    def __init__(self, cfg: RunConfig, with_channel_tokens: bool):
        super().__init__()
        d = cfg.dino
        self.cfg = cfg
        self.dinov1 = cfg.objective == "dinov1"
        self.n_global = cfg.crops.global_crops_number
        self.n_crops = self.n_global + cfg.crops.local_crops_number
        self.with_channel_tokens = with_channel_tokens
        self.dino = DINOLoss(d.n_prototypes, d.student_temp, d.center_momentum, d.centering)
        self.ibot = IBOTPatchLoss(d.n_prototypes, d.student_temp, d.center_momentum, d.centering)
        # channel CLS tokens get their own centre: their statistics differ from the global CLS
        self.dino_channel = DINOLoss(d.n_prototypes, d.student_temp, d.center_momentum, d.centering)

    def forward(
        self, student: dict, teacher: dict, masks: torch.Tensor, teacher_temp: float
    ) -> dict:
        cfg = self.cfg
        terms: dict[str, torch.Tensor] = {}
        all_targets = self.dino.teacher_targets(teacher["cls_logits"], teacher_temp)
        targets = all_targets.chunk(self.n_global)
        terms["dino"] = self.dino(list(student["cls_logits"].chunk(self.n_crops)), list(targets))
        if not self.dinov1:
            terms["koleo"] = sum(koleo_loss(c) for c in student["cls"].chunk(self.n_global))
        if cfg.ibot.loss_weight > 0 and not self.dinov1:
            patch_targets = self.ibot.teacher_targets(teacher["patch_logits"], teacher_temp)
            terms["ibot"] = self.ibot(student["patch_logits"], patch_targets, masks)
        if self.with_channel_tokens:
            t_logits = teacher["channel_logits"]  # (n_global * B, K, P)
            n_channels = t_logits.shape[1]
            t_targets = self.dino_channel.teacher_targets(t_logits.flatten(0, 1), teacher_temp)
            t_targets = t_targets.reshape(t_logits.shape)
            s_logits = student["channel_logits"]
            terms["dino_channel"] = sum(
                self.dino_channel(
                    list(s_logits[:, k].chunk(self.n_crops)),
                    list(t_targets[:, k].chunk(self.n_global)),
                )
                for k in range(n_channels)
            )
            if not self.dinov1:
                # KoLeo over all channel CLS tokens of a crop's batch
                terms["koleo_channel"] = sum(
                    koleo_loss(c.flatten(0, 1)) for c in student["channel_cls"].chunk(self.n_global)
                )
        total = cfg.dino.loss_weight * terms["dino"]
        if "koleo" in terms:
            total = total + cfg.dino.koleo_loss_weight * terms["koleo"]
        if "ibot" in terms:
            total = total + cfg.ibot.loss_weight * terms["ibot"]
        if self.with_channel_tokens:
            total = total + cfg.dino.loss_weight * terms["dino_channel"]
        if "koleo_channel" in terms:
            total = total + cfg.dino.koleo_loss_weight * terms["koleo_channel"]
        terms["total"] = total
        # collapse monitor (not a loss term): mean entropy of the teacher's CLS targets
        terms["teacher_entropy"], terms["teacher_batch_entropy"] = teacher_entropy(all_targets)
        return terms


class DINOTraining:
    """The DINO objectives (``dino``, ``dinov1``): student and EMA teacher networks with DINO
    heads, the loss modules, the last-layer freeze and the teacher update.

    ``student`` is what the optimiser trains (and DDP wraps).
    """

    def __init__(self, cfg: RunConfig, device: torch.device):
        self.cfg = cfg
        self.student = build_network(cfg, drop_path=cfg.model.drop_path).to(device)
        self.teacher = build_network(cfg, drop_path=0.0).to(device)
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.with_channel_tokens = cfg.model.family == "ha" and cfg.ha_channel_losses
        self.objective = DINOv2Objective(cfg, self.with_channel_tokens).to(device)

    def loss_terms(self, model: nn.Module, batch: dict, values: dict) -> dict:
        """Named loss terms of one batch, ``total`` included; ``model`` is the (wrapped) student."""
        with torch.no_grad():
            # the teacher sees the unmasked global crops; its patch logits are read at the
            # positions the student sees masked
            teacher_out = self.teacher(
                batch["global"],
                masks=batch["masks"],
                mask_input=False,
                channel_ids=batch["channel_ids"],
                with_channel_tokens=self.with_channel_tokens,
            )
        student_out = model(
            batch["global"],
            batch["local"],
            masks=batch["masks"],
            channel_ids=batch["channel_ids"],
            with_channel_tokens=self.with_channel_tokens,
        )
        return self.objective(student_out, teacher_out, batch["masks"], values["teacher_temp"])

    def before_optimizer_step(self, values: dict) -> None:
        """Nothing: the last-layer freeze is the prototypes' lr of 0 (see :func:`train`)."""

    @torch.no_grad()
    def after_optimizer_step(self, values: dict) -> None:
        momentum = values["teacher_momentum"]
        teacher_params = list(self.teacher.parameters())
        torch._foreach_mul_(teacher_params, momentum)
        torch._foreach_add_(
            teacher_params, [p.detach() for p in self.student.parameters()], alpha=1 - momentum
        )

    def state_dict(self) -> dict:
        """Checkpoint entries of the networks and losses (schema: ``train/checkpoint.py``)."""
        state = {
            "student": self.student.backbone.state_dict(),
            "teacher": self.teacher.backbone.state_dict(),
            "student_dino_head": self.student.dino_head.state_dict(),
            "teacher_dino_head": self.teacher.dino_head.state_dict(),
            "losses": self.objective.state_dict(),
        }
        if self.cfg.ibot.separate_head:
            state["student_ibot_head"] = self.student.ibot_head.state_dict()
            state["teacher_ibot_head"] = self.teacher.ibot_head.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.student.backbone.load_state_dict(state["student"])
        self.teacher.backbone.load_state_dict(state["teacher"])
        self.student.dino_head.load_state_dict(state["student_dino_head"])
        self.teacher.dino_head.load_state_dict(state["teacher_dino_head"])
        if self.cfg.ibot.separate_head:
            self.student.ibot_head.load_state_dict(state["student_ibot_head"])
            self.teacher.ibot_head.load_state_dict(state["teacher_ibot_head"])
        self.objective.load_state_dict(state["losses"])


class MAETraining:
    """The ``mae`` objective: encoder (the run's backbone) + light decoder, no teacher.

    Checkpoint entries: ``student`` and ``teacher`` both hold the encoder (what
    ``load_backbone`` reads), ``decoder`` the decoder.
    """

    def __init__(self, cfg: RunConfig, device: torch.device):
        self.cfg = cfg
        backbone = build_run_backbone(cfg, drop_path=cfg.model.drop_path)
        dim, depth, heads = default_decoder_size(backbone.embed_dim)
        m = cfg.mae
        decoder = MAEDecoder(
            backbone.embed_dim,
            patch_size=backbone.patch_size,
            in_chans=backbone.in_chans,
            grid_size=backbone.grid_size,
            decoder_dim=int(m.decoder_dim or dim),
            depth=int(m.decoder_depth or depth),
            num_heads=int(m.decoder_heads or heads),
        )
        self.student = MAENetwork(backbone, decoder).to(device)

    def loss_terms(self, model: nn.Module, batch: dict, values: dict) -> dict:
        images, masks = batch["global"], batch["masks"]
        pred = model(images, masks)
        target = patchify(images, self.student.backbone.patch_size)
        loss = mae_loss(pred, target, masks, norm_pix=self.cfg.mae.norm_pix_loss)
        return {"mae": loss, "total": loss}

    def before_optimizer_step(self, values: dict) -> None:
        pass  # no prototypes to freeze

    def after_optimizer_step(self, values: dict) -> None:
        pass  # no teacher to update

    def state_dict(self) -> dict:
        encoder = self.student.backbone.state_dict()
        return {
            "student": encoder,
            "teacher": encoder,
            "decoder": self.student.decoder.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.student.backbone.load_state_dict(state["student"])
        self.student.decoder.load_state_dict(state["decoder"])


def build_training(cfg: RunConfig, device: torch.device) -> DINOTraining | MAETraining:
    """The objective-specific part of a run (seeds the global generator with ``cfg.seed`` first,
    so every rank builds identical networks)."""
    torch.manual_seed(cfg.seed)
    if cfg.objective == "mae":
        return MAETraining(cfg, device)
    return DINOTraining(cfg, device)


def _rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (saved for third-party code that uses it)
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# run-config keys that may change between a run and its resumption
_RESUMABLE_CHANGES = {"checkpoint_every", "log_every", "num_workers"}


def _check_same_run(saved: dict, current: dict, path: Path) -> None:
    # a key added to RunConfig after the checkpoint was written counts as its default value
    defaults = RunConfig().to_dict()
    differing = [
        k
        for k in current
        if k not in _RESUMABLE_CHANGES and saved.get(k, defaults[k]) != current[k]
    ]
    if differing:
        raise UserError(
            f"cannot resume from {path}: its run config differs in {', '.join(differing)}; "
            "use a new --out-dir or restore the original config"
        )


def describe_run(
    cfg: RunConfig,
    corpus: pd.DataFrame,
    student: nn.Module,
    resolved: ResolvedRun,
    info: DistInfo,
    device_kind: str,
    use_bf16: bool,
) -> str:
    """The start-up line of a run: what it trains, on what, for how long."""
    channels = corpus["n_channels"].value_counts().sort_index()
    channel_text = ", ".join(f"{int(k)}ch x {int(n)}" for k, n in channels.items())
    n_backbone = sum(p.numel() for p in student.backbone.parameters())
    n_total = sum(p.numel() for p in student.parameters())
    unit = "channel images" if cfg.model.family == "boc" else "images"
    return (
        f"run {cfg.run or '(unnamed)'}: objective={cfg.objective} family={cfg.model.family} "
        f"arch={cfg.model.arch}; corpus {len(corpus)} rows ({channel_text}); "
        f"parameters {n_total / 1e6:.3f} M ({n_backbone / 1e6:.3f} M backbone); "
        f"device={device_kind} x {info.world_size} process(es), "
        f"precision={'bf16' if use_bf16 else 'fp32'}; iterations={resolved.total_iterations}; "
        f"effective batch={cfg.batch_size} {unit} ({cfg.batch_size // info.world_size} per process)"
        f"; lr={resolved.lr:.3g}, warm-up {resolved.warmup_iterations} it"
    )


def _to_device(batch: dict, device: torch.device) -> dict:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def train(
    corpus_path: str | os.PathLike,
    run_config: RunConfig | dict | str,
    out_dir: str | os.PathLike,
    device: str = "auto",
) -> Path:
    """Run (or resume) one pretraining run; returns the path of the final checkpoint."""
    cfg = run_config if isinstance(run_config, RunConfig) else load_run_config(run_config)
    out_dir = Path(out_dir)
    device_kind = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if device_kind == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda requested but CUDA is not available")
    info = init_distributed(device_kind)
    torch_device = torch.device(f"cuda:{info.local_rank}" if device_kind == "cuda" else "cpu")
    if cfg.batch_size % info.world_size:
        raise UserError(
            f"run config: 'batch_size' {cfg.batch_size} is not divisible by {info.world_size} processes"
        )
    local_batch = cfg.batch_size // info.world_size

    corpus = load_corpus(corpus_path)
    resolved = resolve_run(cfg, corpus)
    if resolved.boc_iterations_multiplier != 1.0:
        log.info(
            "BoC pixel budget: %d iterations x %.4g mean channels per image = %d iterations",
            cfg.iterations,
            resolved.boc_iterations_multiplier,
            resolved.total_iterations,
        )
    schedules = make_schedules(cfg, resolved)

    # same seed on every rank: identical initial networks everywhere
    training = build_training(cfg, torch_device)
    student = training.student
    patch_size = student.backbone.patch_size
    uses_local_crops = cfg.objective != "mae" and cfg.crops.local_crops_number
    for key in ("global_crops_size", "local_crops_size"):
        size = getattr(cfg.crops, key)
        if size % patch_size and (key == "global_crops_size" or uses_local_crops):
            raise UserError(
                f"run config: 'crops.{key}' {size} is not a multiple of the patch size {patch_size}"
            )
    optimizer = torch.optim.AdamW(
        parameter_groups(student, cfg.layerwise_decay, cfg.patch_embed_lr_mult),
        lr=resolved.lr,
        betas=tuple(cfg.betas),
    )

    checkpoint_dir = out_dir / "checkpoints"
    start = 0
    if info.is_main:
        for stale in remove_stale_temporaries(out_dir, checkpoint_dir):
            log.warning("removed %s, a checkpoint write that never finished", stale)
    resume_path, state = newest_readable_checkpoint(checkpoint_dir, torch_device)
    if resume_path is not None:
        _check_same_run(state["run_config"], cfg.to_dict(), resume_path)
        training.load_state_dict(state)
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        start = int(state["iteration"])
        log.info(
            "resumed from %s at iteration %d/%d", resume_path, start, resolved.total_iterations
        )

    def checkpoint_state(iteration: int) -> dict:
        return {
            **training.state_dict(),
            "optimizer": optimizer.state_dict(),
            "iteration": iteration,
            "total_iterations": resolved.total_iterations,
            "boc_iterations_multiplier": resolved.boc_iterations_multiplier,
            "resolved": dataclasses.asdict(resolved),
            "run_config": cfg.to_dict(),
            "rng": _rng_state(),
        }

    model = student
    if info.world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            student,
            device_ids=[info.local_rank] if device_kind == "cuda" else None,
            find_unused_parameters=True,  # e.g. the mask token when no sample is masked
        )
    batches = PretrainBatches(
        corpus,
        cfg,
        local_batch=local_batch,
        total_iterations=resolved.total_iterations,
        patch_size=patch_size,
        rank=info.rank,
    )
    loader = torch.utils.data.DataLoader(
        batches,
        batch_size=None,
        sampler=range(start, resolved.total_iterations),
        num_workers=cfg.num_workers,
        pin_memory=device_kind == "cuda",
        persistent_workers=False,
    )
    use_bf16 = cfg.precision == "bf16" and device_kind == "cuda"
    progress = ProgressLogger(
        resolved.total_iterations, every=cfg.log_every, unit="img", logger=log, start=start
    )
    monitor = CollapseMonitor(cfg.dino.n_prototypes) if cfg.objective != "mae" else None
    if info.is_main:
        log.info("%s", describe_run(cfg, corpus, student, resolved, info, device_kind, use_bf16))
    student.train()
    iteration = start
    with GracefulStop() as stop:
        for iteration, batch in zip(range(start, resolved.total_iterations), loader, strict=True):
            values = schedules.at(iteration)
            for group in optimizer.param_groups:
                # the last-layer freeze sets the prototypes' lr to 0, as DINOv2 does
                frozen = group["is_last_layer"] and values.get("freeze_last_layer", False)
                group["lr"] = 0.0 if frozen else values["lr"] * group["lr_mult"]
                group["weight_decay"] = values["weight_decay"] * group["wd_mult"]
            batch = _to_device(batch, torch_device)
            # stochastic depth draws from the global generator: reseed it per iteration
            torch.manual_seed(iteration_seed(cfg.seed, iteration, info.rank, 2))
            with torch.autocast(device_type=device_kind, dtype=torch.bfloat16, enabled=use_bf16):
                terms = training.loss_terms(model, batch, values)
            loss = terms["total"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {float(loss)} at iteration {iteration}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            training.before_optimizer_step(values)
            if cfg.clip_grad > 0:
                clip_gradients(student, cfg.clip_grad)
            optimizer.step()
            training.after_optimizer_step(values)
            done = iteration + 1
            if info.is_main:
                logged_values = {k: float(v.detach()) for k, v in terms.items()}
                if monitor is not None:
                    logged_values["entropy_ratio"] = monitor.ratio(logged_values["teacher_entropy"])
                wrote = progress.step(
                    iteration,
                    items=batch["n_images"] * info.world_size,
                    **logged_values,
                    lr=values["lr"],
                )
                if wrote and monitor is not None:
                    monitor.update(
                        logged_values["teacher_entropy"],
                        logged_values["teacher_batch_entropy"],
                        done,
                    )
            stopping = stop.requested(torch_device) and done < resolved.total_iterations
            if info.is_main and (done % cfg.checkpoint_every == 0 or stopping):
                save_checkpoint(
                    periodic_checkpoint_path(checkpoint_dir, done), checkpoint_state(done)
                )
                prune_checkpoints(checkpoint_dir, cfg.keep_checkpoints)
            iteration = done
            if stopping:
                if info.world_size > 1:
                    dist.barrier()
                log.warning(
                    "stopped at iteration %d/%d on %s; wrote %s; exiting with status %d so the job "
                    "is resubmitted and resumes there",
                    done,
                    resolved.total_iterations,
                    signal.Signals(stop.signum).name,
                    periodic_checkpoint_path(checkpoint_dir, done),
                    REQUEUE_EXIT,
                )
                raise StopRequested(done, stop.signum)
    final = out_dir / "checkpoint.pt"
    if info.is_main:
        save_checkpoint(final, checkpoint_state(iteration))
        log.info("wrote %s (%d iterations)", final, iteration)
    if info.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return final


def save_random_init(run_config: RunConfig | dict | str, out_dir: str | os.PathLike) -> Path:
    """The checkpoint of a run at initialisation, before any training step (a reference:
    what pretraining adds is the difference to it). Same format as a trained checkpoint, built
    exactly as :func:`train` builds its networks, with ``iteration`` 0 and ``random_init``."""
    cfg = run_config if isinstance(run_config, RunConfig) else load_run_config(run_config)
    training = build_training(cfg, torch.device("cpu"))
    final = Path(out_dir) / "checkpoint.pt"
    state = {
        **training.state_dict(),
        "iteration": 0,
        "total_iterations": 0,
        "random_init": True,
        "run_config": cfg.to_dict(),
    }
    save_checkpoint(final, state)
    log.info(
        "wrote %s: %s %s at random initialisation (seed %d), not trained",
        final,
        cfg.model.family,
        cfg.model.arch,
        cfg.seed,
    )
    return final


# -------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", help="corpus table (parquet) from assemble-corpus")
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="write the run's checkpoint at random initialisation, without training "
        "(a reference row; needs no corpus)",
    )
    parser.add_argument(
        "--run-config", required=True, help="run config: a JSON file or a JSON string"
    )
    parser.add_argument(
        "--out-dir", required=True, help="run directory (checkpoints, checkpoint.pt)"
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.random_init:
        if args.corpus:
            raise UserError("--random-init trains nothing: give no --corpus")
        save_random_init(args.run_config, args.out_dir)
        return 0
    if not args.corpus:
        raise UserError("--corpus is required (unless --random-init)")
    train(args.corpus, args.run_config, args.out_dir, device=args.device)
    return 0


__all__ = [
    "CollapseMonitor",
    "CorpusSampler",
    "DINOTraining",
    "DINOv2Objective",
    "MAETraining",
    "PretrainBatches",
    "RunConfig",
    "SSLNetwork",
    "build_network",
    "build_run_backbone",
    "build_training",
    "load_corpus",
    "load_run_config",
    "parameter_groups",
    "resolve_run",
    "save_random_init",
    "teacher_entropy",
    "train",
]
