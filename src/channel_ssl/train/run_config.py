"""The run config of one pretraining run: typed defaults (the paper's / DINOv2's values, docs/paper.md section 2), loading from JSON and validation that names the key."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from channel_ssl.errors import UserError
from channel_ssl.models import FAMILIES
from channel_ssl.models.heads import HEAD_INITS

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
    groups_per_step: int = 1  # virtual ranks per process (schema: pretrain.groups_per_step)
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
    _require(
        cfg.groups_per_step == 1 or cfg.dino.centering == "centering",
        "groups_per_step",
        f"is {cfg.groups_per_step}; sub-batches need dino.centering 'centering' (Sinkhorn-Knopp "
        "would have to normalise over all of them at once)",
    )
    for key in (
        "iterations",
        "batch_size",
        "groups_per_step",
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
