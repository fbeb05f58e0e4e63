"""The paper's linear-probe protocol (docs/paper.md section 4, appendix D.2 of the paper).

"All classifiers for 4350 iterations on 8 GPUs with a batch size per GPU of 32 for HPA-FOV and
WTC, and 128 for JUMP-CP", AdamW with a one-cycle cosine schedule, 14 learning rates trained
together on the same batches and chosen on validation; training images go through a random
crop (384 px on HPA-FOV, 224 elsewhere) and flips **and then through the frozen backbone**, so
every step sees new features; evaluation uses the centre crop. Normalisation: per-image
self-normalisation, except on JUMP-CP, where it is the dataset normalisation of Bao et al.
(2024) (:data:`BAO_JUMPCP`).

This is the ``augmented`` protocol (``linear_probe.protocol``); the ``features`` protocol trains
the same classifiers on features extracted once (faster; the demo uses it). Every table says
which made it.

:class:`AugmentedTrainer` plugs into :func:`channel_ssl.eval.linear_probe.train_probes` through
``ProbeConfig.trainer``; selection and scoring are the features protocol's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from channel_ssl.data.augment import self_normalize
from channel_ssl.data.shards import ShardStore
from channel_ssl.errors import UserError
from channel_ssl.progress import ProgressLogger

log = logging.getLogger("channel_ssl.eval.augmented_probe")

NORMALISATIONS = ("self", "bao_jumpcp")

# Bao et al. (2024), insitro/ChannelViT channelvit/config/transformations/cell.yaml: per-channel
# mean and std of JUMP-CP's uint8 pixels, in its stored channel order (docs/datasets.md section
# 6: Mito, AGP, RNA, ER, DNA, HighZBF, LowZBF, Brightfield); applied as (x - mean) / std.
BAO_JUMPCP = {
    "Mito": (4.031743599139058, 17.318438884455695),
    "AGP": (1.565935237087539, 12.015918256263747),
    "RNA": (3.77367898215863, 16.966058078452495),
    "ER": (3.4605251427133257, 15.064776266287147),
    "DNA": (4.1723172504050225, 17.964118200870608),
    "HighZBF": (6.780529773318951, 21.638766346725316),
    "LowZBF": (6.787385700135139, 21.670565699654457),
    "Brightfield": (6.778120829362721, 21.639488585095584),
}


@dataclass(frozen=True)
class ProtocolSettings:
    """The augmented protocol for one source (``linear_probe.augmented`` in the config)."""

    iterations: int
    batch_size: int  # global batch (the paper's per-GPU batch x 8 GPUs)
    crop_size: int
    normalisation: str = "self"

    def __post_init__(self):
        if self.normalisation not in NORMALISATIONS:
            raise UserError(
                f"probe normalisation {self.normalisation!r}; valid: {', '.join(NORMALISATIONS)}"
            )


def normalise(x: torch.Tensor, kind: str, channels: tuple[str, ...]) -> torch.Tensor:
    """float ``(B, K, H, W)`` of uint8 values -> the backbone's input."""
    if kind == "self":
        return self_normalize(x)
    unknown = [c for c in channels if c not in BAO_JUMPCP]
    if unknown:
        raise UserError(
            f"Bao et al.'s JUMP-CP normalisation has no statistics for channel(s) {unknown}; "
            f"it knows {list(BAO_JUMPCP)}"
        )
    mean = torch.tensor([BAO_JUMPCP[c][0] for c in channels], dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor([BAO_JUMPCP[c][1] for c in channels], dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


def _pad_to(x: torch.Tensor, size: int, top_left: tuple[int, int] | None = None) -> torch.Tensor:
    """Zero-pad ``(B, K, H, W)`` to at least ``size`` on both sides (centred unless given)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if not pad_h and not pad_w:
        return x
    top, left = top_left if top_left is not None else (pad_h // 2, pad_w // 2)
    return F.pad(x, (left, pad_w - left, top, pad_h - top))


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    x = _pad_to(x, size)
    height, width = x.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return x[..., top : top + size, left : left + size]


def random_crop_flip(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Per image: random crop of ``size`` (zero-padded at a random place if smaller, as
    ChannelViT's RandomPadCrop), then horizontal and vertical flips with probability 1/2."""
    out = []
    for image in x:
        height, width = image.shape[-2:]
        pad_h, pad_w = max(0, size - height), max(0, size - width)
        pad_at = (
            int(torch.randint(pad_h + 1, (1,), generator=generator)),
            int(torch.randint(pad_w + 1, (1,), generator=generator)),
        )
        image = _pad_to(image[None], size, pad_at)[0]
        height, width = image.shape[-2:]
        top = int(torch.randint(height - size + 1, (1,), generator=generator))
        left = int(torch.randint(width - size + 1, (1,), generator=generator))
        image = image[..., top : top + size, left : left + size]
        if torch.rand((), generator=generator) < 0.5:
            image = image.flip(-1)
        if torch.rand((), generator=generator) < 0.5:
            image = image.flip(-2)
        out.append(image)
    return torch.stack(out)


def channel_names(manifest: pd.DataFrame) -> tuple[str, ...]:
    names = set(manifest["channels"].astype(str))
    if len(names) != 1:
        raise UserError(f"a probe needs one channel layout per source; the manifest has {names}")
    return tuple(names.pop().split("|"))


class AugmentedTrainer:
    """Trains the probe sweep with augmented images through a frozen backbone.

    ``features_of(x)`` maps a normalised float batch to its recipe features (no gradient).
    """

    def __init__(
        self,
        features_of,
        manifest: pd.DataFrame,
        store: ShardStore,
        settings: ProtocolSettings,
        device: torch.device | str = "cpu",
    ):
        self.features_of = features_of
        self.manifest = manifest.reset_index(drop=True)
        self.store = store
        self.settings = settings
        self.device = torch.device(device)
        self.channels = channel_names(self.manifest)

    def images(self, positions: np.ndarray) -> torch.Tensor:
        rows = self.manifest.iloc[positions]
        stack = [
            self.store.get(s, int(o)) for s, o in zip(rows["shard"], rows["offset"], strict=True)
        ]
        return torch.from_numpy(np.stack(stack)).float()

    def batch_features(self, positions: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        x = random_crop_flip(self.images(positions), self.settings.crop_size, generator)
        x = normalise(x, self.settings.normalisation, self.channels)
        with torch.no_grad():
            return self.features_of(x.to(self.device)).float()

    def train(self, x_train, positions, y_train, n_classes, config, multilabel):
        """``TrainedProbes`` of the sweep: standardised by the centre-crop training features
        ``x_train``; trained for ``settings.iterations`` steps of ``settings.batch_size``
        augmented images drawn without replacement within each pass over ``positions``."""
        from channel_ssl.eval.linear_probe import TrainedProbes, feature_statistics, initial_weights

        if positions is None:
            raise UserError("the augmented probe protocol needs the manifest rows of the task")
        positions = np.asarray(positions)
        mean, std = feature_statistics(torch.as_tensor(np.asarray(x_train, np.float32)))
        if multilabel:
            y = torch.as_tensor(np.asarray(y_train, np.float32))
            loss_fn = torch.nn.BCEWithLogitsLoss()
        else:
            y = torch.as_tensor(np.asarray(y_train, np.int64))
            loss_fn = torch.nn.CrossEntropyLoss()
        lrs = config.learning_rates()
        gen = torch.Generator().manual_seed(config.seed)
        n_features = len(mean)
        linears = torch.nn.ModuleList(torch.nn.Linear(n_features, n_classes) for _ in lrs)
        with torch.no_grad():
            weights = initial_weights(gen, len(lrs), n_classes, n_features)
            for lin, weight in zip(linears, weights, strict=True):
                lin.weight.copy_(weight)
                lin.bias.zero_()
        linears.to(self.device)
        optimizer = torch.optim.AdamW(
            [
                {"params": lin.parameters(), "lr": float(lr)}
                for lin, lr in zip(linears, lrs, strict=True)
            ],
            weight_decay=config.weight_decay,
        )
        total = int(self.settings.iterations)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[float(lr) for lr in lrs], total_steps=total, anneal_strategy="cos"
        )
        batch = min(int(self.settings.batch_size), len(positions))
        progress = ProgressLogger(total, every=max(1, total // 10), unit="img", logger=log)
        order = torch.empty(0, dtype=torch.long)
        mean_d, std_d = mean.to(self.device), std.to(self.device)
        for step in range(total):
            if len(order) < batch:  # a new pass over the training rows
                order = torch.cat([order, torch.randperm(len(positions), generator=gen)])
            idx, order = order[:batch], order[batch:]
            feats = (self.batch_features(positions[idx.numpy()], gen) - mean_d) / std_d
            yb = y[idx].to(self.device)
            loss = sum(loss_fn(lin(feats), yb) for lin in linears)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            progress.step(step, items=len(idx), loss=float(loss.detach()) / len(linears))
        log.info(
            "augmented probe: %d iterations x %d images, crop %d, %s normalisation",
            total,
            batch,
            self.settings.crop_size,
            self.settings.normalisation,
        )
        weight = torch.stack([lin.weight.detach() for lin in linears])
        bias = torch.stack([lin.bias.detach() for lin in linears])
        return TrainedProbes(lrs, mean_d, std_d, weight, bias, multilabel)
