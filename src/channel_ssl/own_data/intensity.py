"""Per-channel intensity statistics: the reference a learned feature must beat.

For every channel of an image, on the stored uint8 pixels (the whole image as imported, before
any crop or normalisation): mean, standard deviation and the 5th, 25th, 50th, 75th and 95th
percentiles. Feature layout: channel-major, ``[ch0 mean, ch0 std, ch0 p5, ..., ch1 mean, ...]``,
so ``(N, 7 K)`` for K channels. A model whose features classify no better than these has not
shown that it sees more than brightness and contrast.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from channel_ssl.data.shards import ShardStore

PERCENTILES = (5, 25, 50, 75, 95)
STATISTICS = ("mean", "std") + tuple(f"p{p}" for p in PERCENTILES)


def intensity_statistics(images: np.ndarray) -> np.ndarray:
    """uint8 ``(B, K, H, W)`` -> float32 ``(B, K * 7)`` (module docstring)."""
    x = np.asarray(images, dtype=np.float64).reshape(images.shape[0], images.shape[1], -1)
    mean = x.mean(axis=-1)
    std = x.std(axis=-1)
    percentiles = np.percentile(x, PERCENTILES, axis=-1)  # (5, B, K)
    stats = np.concatenate([mean[None], std[None], percentiles])  # (7, B, K)
    return stats.transpose(1, 2, 0).reshape(images.shape[0], -1).astype(np.float32)


def feature_names(channels: list[str]) -> list[str]:
    """Names of the columns of :func:`intensity_statistics` (``DNA_mean``, ``DNA_p95``, ...)."""
    return [f"{channel}_{stat}" for channel in channels for stat in STATISTICS]


def dataset_statistics(manifest: pd.DataFrame, store: ShardStore) -> np.ndarray:
    """float32 ``(N, 7 K)``: row i is the image whose manifest ``row`` is i."""
    out: np.ndarray | None = None
    for row, shard, offset in zip(
        manifest["row"], manifest["shard"], manifest["offset"], strict=True
    ):
        stats = intensity_statistics(store.get(shard, int(offset))[None])[0]
        if out is None:
            out = np.zeros((len(manifest), stats.shape[0]), dtype=np.float32)
        out[int(row)] = stats
    if out is None:
        raise ValueError("no images to compute intensity statistics of")
    return out
