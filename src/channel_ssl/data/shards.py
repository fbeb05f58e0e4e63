"""Shards of preprocessed images and the manifest that indexes them.

Millions of small files do not survive a parallel file system, so every source is
preprocessed once into a few large arrays (shards) read sequentially.

On-disk schema of one preprocessed source directory::

    <dir>/manifest.parquet     one row per image (MANIFEST_COLUMNS)
    <dir>/shard-00000.npy      uint8 array (n, K, H, W); all images of a shard share K, H, W
    <dir>/shard-00001.npy      ...

Manifest columns:
    source      str   source dataset name (``Allen``, ``HPA``, ``CP``, ...)
    image_id    str   the image's id in its source (file path for CHAMMI)
    row         int   row of the image in the source's own metadata table
    channels    str   channel names joined by ``|`` in channel order
    n_channels  int   K
    height      int   H after preprocessing
    width       int   W after preprocessing
    label       str   class label (empty string if unlabelled)
    split       str   split name in the source (``Train``, ``Task_one``, ..., or ``unlabelled``)
    tasks       str   evaluation tasks the image belongs to, joined by ``|``
    factors     str   JSON object of the factors of variation (cell_type, plate, ...)
    shard       str   shard file name relative to the manifest's directory
    offset      int   index of the image inside its shard
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.atomic import atomic_path
from channel_ssl.npy import load_npy

MANIFEST_COLUMNS = [
    "source",
    "image_id",
    "row",
    "channels",
    "n_channels",
    "height",
    "width",
    "label",
    "split",
    "tasks",
    "factors",
    "shard",
    "offset",
]
MANIFEST_NAME = "manifest.parquet"


class ShardWriter:
    """Collect images (K, H, W) into shards of at most ``shard_size`` images.

    A shard is written (atomically) when it is full, when the image shape changes,
    or on :meth:`close`. :meth:`add` returns the ``(shard, offset)`` of the image.
    """

    def __init__(self, out_dir: str | os.PathLike, shard_size: int, prefix: str = "shard"):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shard_size = int(shard_size)
        self.prefix = prefix
        self._buffer: list[np.ndarray] = []
        self._index = 0
        self.written: list[str] = []

    def _name(self) -> str:
        return f"{self.prefix}-{self._index:05d}.npy"

    def add(self, image: np.ndarray) -> tuple[str, int]:
        if image.ndim != 3:
            raise ValueError(f"expected an image of shape (K, H, W), got {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"shards hold uint8 images, got {image.dtype}")
        if self._buffer and self._buffer[0].shape != image.shape:
            self.flush()
        if len(self._buffer) >= self.shard_size:
            self.flush()
        self._buffer.append(image)
        return self._name(), len(self._buffer) - 1

    def flush(self) -> None:
        if not self._buffer:
            return
        name = self._name()
        with atomic_path(self.out_dir / name) as tmp:
            np.save(tmp, np.stack(self._buffer))
        self.written.append(name)
        self._buffer = []
        self._index += 1

    def close(self) -> list[str]:
        self.flush()
        return self.written


class ShardStore:
    """Read images back from the shards of one directory (memory-mapped, cached per shard)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._cache: dict[str, np.ndarray] = {}

    def shard(self, name: str) -> np.ndarray:
        arr = self._cache.get(name)
        if arr is None:
            path = self.root / name
            if not path.exists():
                raise FileNotFoundError(f"shard {path} listed in the manifest does not exist")
            arr = load_npy(path, "shard", mmap_mode="r")
            self._cache[name] = arr
        return arr

    def get(self, shard: str, offset: int) -> np.ndarray:
        """Return image ``offset`` of shard ``shard`` as an in-memory uint8 array (K, H, W)."""
        arr = self.shard(shard)
        if not 0 <= offset < arr.shape[0]:
            raise IndexError(
                f"offset {offset} out of range for shard {self.root / shard} ({arr.shape[0]} images)"
            )
        return np.asarray(arr[offset])


def load_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest and check it has every column of :data:`MANIFEST_COLUMNS`."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(f"manifest {path} does not exist")
    df = pd.read_parquet(path)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest {path} lacks column(s) {missing}")
    return df


def write_manifest(path: str | os.PathLike, rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """Write a manifest atomically after checking its columns; returns the DataFrame written."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"manifest for {path} lacks column(s) {missing}")
    df = df[MANIFEST_COLUMNS + [c for c in df.columns if c not in MANIFEST_COLUMNS]]
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return df


def factors_of(row) -> dict:
    """Decode the ``factors`` JSON of one manifest row."""
    return json.loads(row["factors"]) if row["factors"] else {}
