"""Non-CHAMMI sources -> shards + manifest (``channel-ssl prepare-source``).

``channel-ssl prepare-source --source NAME --raw-dir RAW --out-dir DIR --image-size N
--shard-size M`` reads the source in its native layout (``docs/datasets.md``) with the
source's reader and writes ``DIR/shard-*.npy`` + ``DIR/manifest.parquet``
(schema in :mod:`channel_ssl.data.shards`).

:data:`READERS` is a dispatch table ``name -> "module:function"``; the module is imported only
when its source is prepared. A reader is ``function(raw_dir, out_dir, image_size, shard_size)
-> manifest DataFrame``. A source declares its reader in ``registry.SOURCES`` (one place). Readers share
:func:`write_source`, which makes every channel square and ``image_size`` wide exactly as
CHAMMI preprocessing does (:func:`channel_ssl.data.preprocess.square_resize`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl import registry
from channel_ssl.errors import UserError
from channel_ssl.provenance import StepIO
from channel_ssl.step_io import shards_of

log = logging.getLogger("channel_ssl.sources")

# source name -> "module:function" of its reader (one line per source)
# source name -> "module:function" of its reader, as each source declares it in the registry
READERS: dict[str, str] = {name: src.reader for name, src in registry.SOURCES.items()}


def resolve(table: dict[str, str], name: str, what: str) -> Callable:
    """Import and return the function registered for ``name`` in a ``name -> 'module:function'`` table."""
    target = table.get(name)
    if target is None:
        raise UserError(f"unknown {what} {name!r}; known: {sorted(table)}")
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def reader_of(source: str) -> Callable[..., pd.DataFrame]:
    """The reader of ``source``: ``reader(raw_dir, out_dir, image_size, shard_size) -> manifest``."""
    return resolve(READERS, source, "source")


def channels_to_uint8(stack: np.ndarray) -> np.ndarray:
    """(K, H, W) any dtype -> uint8: uint8 stays as is, other dtypes are rescaled channel by channel.

    Per-channel rescaling (by the channel's maximum) mirrors CHAMMI, which normalised every
    channel of every crop to 0..255; a 16-bit stack with one bright channel would otherwise
    leave the others nearly black.
    """
    from channel_ssl.data.preprocess import to_uint8

    if stack.dtype == np.uint8:
        return stack
    return np.stack([to_uint8(np.asarray(channel)) for channel in stack])


def write_source(
    source: str,
    items: Iterable[tuple[np.ndarray, dict]],
    out_dir: str | os.PathLike,
    image_size: int,
    shard_size: int,
    total: int | None = None,
) -> pd.DataFrame:
    """Write the shards and manifest of one source.

    Args:
        source: manifest ``source`` value (e.g. ``hpa_fov``).
        items: ``(stack, fields)`` per image, in manifest order. ``stack`` is ``(K, H, W)`` of
            any dtype (rescaled by :func:`channels_to_uint8`); ``fields`` holds ``image_id``,
            ``row``, ``channels`` (list of names, length K), ``label``, ``split`` and
            ``factors`` (dict, JSON-encoded here), optionally ``tasks``.
        out_dir: directory for ``shard-*.npy`` and ``manifest.parquet``.
        image_size: side of the square uint8 output channels.
        shard_size: images per shard.
        total: number of items, for progress logging only.

    Returns:
        The manifest written (one row per item).
    """
    from channel_ssl.data.preprocess import square_resize
    from channel_ssl.data.shards import MANIFEST_NAME, ShardWriter, write_manifest
    from channel_ssl.progress import ProgressLogger

    if image_size < 1:
        raise UserError(f"--image-size must be >= 1, got {image_size}")
    out_dir = Path(out_dir)
    writer = ShardWriter(out_dir, shard_size)
    progress = ProgressLogger(
        total or 0, every=max(1, min(1000, (total or 10) // 10)), unit="img", logger=log
    )
    rows = []
    for i, (stack, fields) in enumerate(items):
        if stack.ndim != 3 or stack.shape[0] != len(fields["channels"]):
            raise UserError(
                f"{source} image {fields['image_id']!r}: shape {stack.shape} does not match "
                f"channels {list(fields['channels'])}"
            )
        image = square_resize(channels_to_uint8(stack), image_size)
        shard, offset = writer.add(image)
        rows.append(
            {
                "source": source,
                "image_id": str(fields["image_id"]),
                "row": int(fields["row"]),
                "channels": "|".join(fields["channels"]),
                "n_channels": int(image.shape[0]),
                "height": image_size,
                "width": image_size,
                "label": str(fields["label"]),
                "split": str(fields["split"]),
                "tasks": str(fields.get("tasks", "")),
                "factors": json.dumps(fields["factors"], sort_keys=True),
                "shard": shard,
                "offset": offset,
            }
        )
        if total:
            progress.step(i)
    writer.close()
    if not rows:
        raise UserError(f"{source}: no images to write to {out_dir}")
    manifest = write_manifest(out_dir / MANIFEST_NAME, rows)
    log.info(
        "%s: %d images in %d shard(s) -> %s", source, len(manifest), len(writer.written), out_dir
    )
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, choices=sorted(READERS))
    parser.add_argument("--raw-dir", required=True, help="the source in its native layout")
    parser.add_argument("--out-dir", required=True, help="where shards and manifest.parquet go")
    parser.add_argument("--image-size", type=int, required=True)
    parser.add_argument("--shard-size", type=int, required=True)


def run(args: argparse.Namespace) -> int:
    reader_of(args.source)(args.raw_dir, args.out_dir, args.image_size, args.shard_size)
    return 0


def step_io(args) -> StepIO:
    """What this step read and wrote, for its provenance record."""
    manifest = os.path.join(args.out_dir, "manifest.parquet")
    marker = [
        os.path.join(args.raw_dir, name)
        for name in ("DEMO_SOURCE.json", "SOURCE_LOCATION.json")
        if os.path.exists(os.path.join(args.raw_dir, name))
    ]
    return StepIO(inputs=marker, outputs=[manifest], members=shards_of(manifest))
