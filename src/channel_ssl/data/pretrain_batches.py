"""Pretraining data: the corpus table, the weighted sampler of batches homogeneous in K, and
the multi-crop batches of one iteration (every draw seeded by (seed, iteration, rank)).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from channel_ssl.data.augment import MaskGenerator, MultiCropAugmentation
from channel_ssl.data.shards import MANIFEST_COLUMNS, ShardStore
from channel_ssl.errors import UserError
from channel_ssl.losses.mae import random_patch_mask
from channel_ssl.models.channel_sampling import draw_channel_subset, gather_channels
from channel_ssl.train.run_config import (
    JOINT_FAMILIES,
    RunConfig,
)

log = logging.getLogger("channel_ssl.pretrain")


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

    With ``cfg.groups_per_step`` G > 1 the item is ``{"parts": [batch, ...], "n_images": B}``:
    G sub-batches of B / G images, each drawn as a separate (virtual) rank ``rank * G + g``
    draws its own, so one process sees a step's mix of channel-count groups that G real ranks
    would (G = 1: the plain batch below, identical to a rank's batch).

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
        self.groups_per_step = int(cfg.groups_per_step)
        if self.groups_per_step < 1 or local_batch % self.groups_per_step:
            raise UserError(
                f"run config: 'groups_per_step' {cfg.groups_per_step} must be >= 1 and divide the "
                f"per-process batch {local_batch}"
            )
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
        groups = self.groups_per_step
        if groups == 1:
            return self._batch(iteration, self.rank, self.local_batch)
        size = self.local_batch // groups
        parts = [self._batch(iteration, self.rank * groups + g, size) for g in range(groups)]
        return {"parts": parts, "n_images": self.local_batch}

    def _batch(self, iteration: int, rank: int, batch_size: int) -> dict:
        """The batch of ``batch_size`` images that (virtual) rank ``rank`` draws at ``iteration``."""
        seed = self.cfg.seed
        generator = torch.Generator().manual_seed(iteration_seed(seed, iteration, rank, 0))
        rng = np.random.default_rng(iteration_seed(seed, iteration, rank, 1))
        rows, channels = self.sampler.draw(batch_size, generator)
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
            channel_ids = draw_channel_subset(batch_size, global_crops.shape[2], generator)
            global_crops = torch.stack([gather_channels(c, channel_ids) for c in global_crops])
            if local_crops is not None:
                local_crops = torch.stack([gather_channels(c, channel_ids) for c in local_crops])
            if self.family != "cvit":
                channel_ids = None  # only Channel-ViT looks up channel embeddings by position
        n_channels = global_crops.shape[2]
        mask_channels = n_channels if self.family in JOINT_FAMILIES else 1
        if self.objective == "mae":
            masks = random_patch_mask(batch_size, self.n_patches, self.cfg.mae.mask_ratio, rng)
        elif self.objective == "dinov1":
            masks = None  # DINOv1 has no masked-patch loss: the student sees whole crops
        else:
            masks = torch.cat(
                [self.masks.generate(batch_size, rng, mask_channels) for _ in range(n_global)]
            )
        return {
            "global": global_crops.flatten(0, 1),
            "local": None if local_crops is None else local_crops.flatten(0, 1),
            "masks": masks,
            "channel_ids": channel_ids,
            "n_images": batch_size,
        }
