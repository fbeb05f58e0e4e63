"""One CHAMMI dataset -> uint8 shards + manifest (schema in :mod:`channel_ssl.data.shards`).

``channel-ssl preprocess --chammi-root ROOT --dataset Allen --out-dir DIR --image-size 32
--shard-size 512 [--workers N]``

Every image is read with the CHAMMI reader, and every channel is made square without
losing any of the cell: the short side is zero-padded symmetrically to the long side (zero
is the background of the crops), then the square is resized to ``image-size`` with Pillow's
bilinear filter, which widens its support when shrinking and so antialiases. Cropping the
long side instead would cut off the ends of the wide Allen cells (238 x 374). Values stay
uint8. Manifest rows follow the metadata's row order, so feature arrays derived from the
shards line up with ``enriched_meta.csv``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from channel_ssl.data.readers.chammi import (
    DATASETS,
    channel_names,
    load_image,
    metadata_path,
    read_metadata,
    tasks_of,
)
from channel_ssl.data.shards import MANIFEST_NAME, ShardWriter, write_manifest
from channel_ssl.errors import UserError
from channel_ssl.progress import ProgressLogger
from channel_ssl.provenance import StepIO
from channel_ssl.step_io import CHAMMI_METADATA, shards_of

log = logging.getLogger("channel_ssl.preprocess")

# Factor columns copied into the manifest's ``factors`` JSON when the metadata has them.
KNOWN_FACTORS = ("cell_type", "Plate", "source", "Structure")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Keep uint8 as is; rescale other dtypes by the image maximum to 0..255 (CHAMMI's range)."""
    if image.dtype == np.uint8:
        return image
    values = image.astype(np.float64)
    top = values.max()
    if top <= 255 and values.min() >= 0 and np.issubdtype(image.dtype, np.integer):
        return values.astype(np.uint8)
    scaled = values / top * 255.0 if top > 0 else np.zeros_like(values)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def pad_to_square(channel: np.ndarray) -> np.ndarray:
    """Zero-pad an (H, W) array symmetrically on its short side to (S, S), S = max(H, W)."""
    h, w = channel.shape
    size = max(h, w)
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((size, size), dtype=channel.dtype)
    out[top : top + h, left : left + w] = channel
    return out


def square_resize(stack: np.ndarray, image_size: int) -> np.ndarray:
    """(K, H, W) uint8 -> (K, image_size, image_size) uint8: pad to square, then resize."""
    out = np.empty((stack.shape[0], image_size, image_size), dtype=np.uint8)
    for k, channel in enumerate(stack):
        square = pad_to_square(channel)
        if square.shape[0] == image_size:
            out[k] = square
        else:
            resized = Image.fromarray(square, mode="L").resize(
                (image_size, image_size), resample=Image.Resampling.BILINEAR
            )
            out[k] = np.asarray(resized)
    return out


def _load_and_resize(job: tuple[str, dict, int, int]) -> np.ndarray:
    root, row, image_size, n_channels = job
    stack = load_image(root, pd.Series(row, name=row["_row"]), n_channels=n_channels)
    return square_resize(to_uint8(stack), image_size)


def manifest_fields(dataset: str, index: int, row: pd.Series) -> dict:
    """Manifest columns derived from one metadata row (everything but shard/offset/shape)."""
    tasks = [t for t in tasks_of(dataset) if t in row.index and bool(row[t])]
    factors = {c: str(row[c]) for c in KNOWN_FACTORS if c in row.index and str(row[c]) != ""}
    return {
        "source": dataset,
        "image_id": str(row["file_path"]),
        "row": int(index),
        "channels": "|".join(channel_names(dataset)),
        "n_channels": len(channel_names(dataset)),
        "label": str(row["Label"]),
        "split": str(row["train_test_split"]),
        "tasks": "|".join(tasks),
        "factors": json.dumps(factors, sort_keys=True),
    }


def preprocess_dataset(
    chammi_root: str | os.PathLike,
    dataset: str,
    out_dir: str | os.PathLike,
    image_size: int,
    shard_size: int = 512,
    workers: int = 1,
) -> pd.DataFrame:
    """Write ``out_dir/shard-*.npy`` and ``out_dir/manifest.parquet`` for one CHAMMI dataset.

    Returns the manifest (one row per metadata row, same order). Shards hold
    ``(n, K, image_size, image_size)`` uint8.
    """
    if dataset not in DATASETS:
        raise UserError(f"unknown CHAMMI dataset {dataset!r}; expected one of {list(DATASETS)}")
    if image_size < 1:
        raise UserError(f"--image-size must be >= 1, got {image_size}")
    meta = read_metadata(chammi_root, dataset)
    n_channels = len(channel_names(dataset))
    out_dir = Path(out_dir)
    writer = ShardWriter(out_dir, shard_size)
    progress = ProgressLogger(
        len(meta), every=max(1, min(1000, len(meta) // 10)), unit="img", logger=log
    )
    records = meta.to_dict("records")
    jobs = (
        (str(chammi_root), {**rec, "_row": i}, image_size, n_channels)
        for i, rec in enumerate(records)
    )
    rows = []
    if workers > 1:
        pool = ProcessPoolExecutor(max_workers=workers)
        images = pool.map(_load_and_resize, jobs, chunksize=64)
    else:
        pool = None
        images = map(_load_and_resize, jobs)
    try:
        for i, image in enumerate(images):
            shard, offset = writer.add(image)
            fields = manifest_fields(dataset, i, meta.iloc[i])
            fields.update(height=image_size, width=image_size, shard=shard, offset=offset)
            rows.append(fields)
            progress.step(i)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    writer.close()
    if not rows:  # read_metadata refuses a file without rows; never write a column-less manifest
        raise UserError(
            f"{metadata_path(chammi_root, dataset)} lists no images; nothing to write to {out_dir}"
        )
    manifest = write_manifest(out_dir / MANIFEST_NAME, rows)
    log.info(
        "%s: %d images in %d shard(s) -> %s", dataset, len(manifest), len(writer.written), out_dir
    )
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--chammi-root", required=True, help="CHAMMI root holding Allen/, HPA/, CP/"
    )
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument(
        "--out-dir", required=True, help="directory for shard-*.npy and manifest.parquet"
    )
    parser.add_argument(
        "--image-size", type=int, required=True, help="side of the square output channels"
    )
    parser.add_argument("--shard-size", type=int, default=512, help="images per shard")
    parser.add_argument("--workers", type=int, default=1, help="processes decoding images")


def run(args: argparse.Namespace) -> int:
    preprocess_dataset(
        args.chammi_root, args.dataset, args.out_dir, args.image_size, args.shard_size, args.workers
    )
    return 0


def step_io(args) -> StepIO:
    """What this step read and wrote, for its provenance record."""
    manifest = os.path.join(args.out_dir, "manifest.parquet")
    return StepIO(
        inputs=[os.path.join(args.chammi_root, args.dataset, CHAMMI_METADATA)],
        outputs=[manifest],
        members=shards_of(manifest),
    )
