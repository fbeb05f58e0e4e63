"""Extract features of one preprocessed dataset with a pretraining checkpoint.

``channel-ssl extract --checkpoint CKPT --manifest <shards>/<dataset>/manifest.parquet
[--metadata META.csv] --out-dir <features>/<run>/<dataset> --recipes cls1,cls4_pool
--crop-size S --batch-size B [--channels 1,2] [--device auto] [--threads N] [--which teacher]``

``--channels`` keeps only those channel positions, in the order given, before the forward
(e.g. figure 4's microtubules + protein of HPA-FOV). Channel-ViT receives the kept positions as
``channel_ids``, so each channel keeps its learned embedding; bag-of-channels and hierarchical
attention simply see fewer channels. A Channel-ViT asked for more channels than its ``k_max``
fails with the model's ValueError (e.g. 8-channel JUMP-CP).

Per image (uint8 ``(K, H, W)`` from the shards): to float, centre crop to ``S x S`` (images with a
side shorter than S are first resized, bilinear, so the short side is S), per-image per-channel
self-normalisation. Images are batched by shape ``(K, H, W)``; one ``backbone.embed`` per batch
under ``torch.no_grad``; every requested recipe is computed from that one forward.

Output: ``<out-dir>/<recipe>.npy``, float32 ``(N, F)``; row i is the image whose manifest ``row``
is i, so rows line up with the source metadata (``enriched_meta.csv`` for CHAMMI). The manifest's
``row`` values must be exactly 0..N-1, with N the metadata's row count or, without
``--metadata`` (non-CHAMMI sources), the manifest's length.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from channel_ssl.atomic import save_npy
from channel_ssl.data.shards import ShardStore, load_manifest
from channel_ssl.errors import UserError
from channel_ssl.eval.features import (
    canonical_family,
    check_recipes,
    make_all_features,
    n_last_blocks_needed,
)
from channel_ssl.host_memory import freed_host_memory_kept
from channel_ssl.progress import ProgressLogger
from channel_ssl.provenance import StepIO
from channel_ssl.step_io import manifest_file

log = logging.getLogger("channel_ssl.eval.extract")


def check_rows(manifest: pd.DataFrame, n_rows: int, manifest_path: str) -> None:
    """The manifest's ``row`` values must be exactly 0..n_rows-1 (each once)."""
    rows = manifest["row"].to_numpy(dtype=np.int64)
    counts = np.bincount(rows[(rows >= 0) & (rows < n_rows)], minlength=n_rows)
    out_of_range = sorted(set(rows[(rows < 0) | (rows >= n_rows)].tolist()))
    missing = np.flatnonzero(counts == 0)
    duplicated = np.flatnonzero(counts > 1)
    problems = []
    if out_of_range:
        problems.append(f"{len(out_of_range)} row(s) outside 0..{n_rows - 1}: {out_of_range[:10]}")
    if len(missing):
        problems.append(f"{len(missing)} missing row(s): {missing[:10].tolist()}")
    if len(duplicated):
        problems.append(f"{len(duplicated)} duplicated row(s): {duplicated[:10].tolist()}")
    if problems:
        raise UserError(
            f"manifest {manifest_path} does not cover metadata rows 0..{n_rows - 1} exactly once: "
            + "; ".join(problems)
        )


def prepare_batch(images: np.ndarray, crop_size: int) -> torch.Tensor:
    """uint8 ``(B, K, H, W)`` -> self-normalised float ``(B, K, S, S)``."""
    from channel_ssl.data.augment import self_normalize

    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    height, width = x.shape[-2:]
    short = min(height, width)
    if short < crop_size:
        scale = crop_size / short
        size = (max(crop_size, round(height * scale)), max(crop_size, round(width * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        height, width = size
    top, left = (height - crop_size) // 2, (width - crop_size) // 2
    x = x[..., top : top + crop_size, left : left + crop_size]
    return self_normalize(x)


def iter_batches(manifest: pd.DataFrame, store: ShardStore, batch_size: int):
    """Yield ``(rows, images)`` batches in shard order, each batch of one image shape.

    rows: (b,) int64 metadata rows; images: uint8 (b, K, H, W).
    """
    ordered = manifest.sort_values(["shard", "offset"], kind="stable")
    pending: dict[tuple, list] = defaultdict(list)
    for shard, offset, row in zip(ordered["shard"], ordered["offset"], ordered["row"], strict=True):
        image = store.get(shard, int(offset))
        bucket = pending[image.shape]
        bucket.append((int(row), image))
        if len(bucket) == batch_size:
            yield np.array([r for r, _ in bucket]), np.stack([im for _, im in bucket])
            bucket.clear()
    for bucket in pending.values():
        if bucket:
            yield np.array([r for r, _ in bucket]), np.stack([im for _, im in bucket])


def parse_channels(text: str | None) -> list[int] | None:
    """``"1,2"`` -> ``[1, 2]``; None or empty -> None (all channels). UserError on bad input."""
    if text is None or not text.strip():
        return None
    try:
        channels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise UserError(f"--channels {text!r}: expected comma-separated channel positions") from exc
    if any(c < 0 for c in channels):
        raise UserError(f"--channels {text!r}: channel positions start at 0")
    if len(set(channels)) != len(channels):
        raise UserError(f"--channels {text!r}: a channel is listed twice")
    return channels


def select_channels(
    images: np.ndarray, channels: list[int] | None, manifest_path: str
) -> np.ndarray:
    """uint8 ``(B, K, H, W)`` -> ``(B, len(channels), H, W)`` in the order of ``channels``."""
    if channels is None:
        return images
    n_channels = images.shape[1]
    if max(channels) >= n_channels:
        raise UserError(
            f"manifest {manifest_path}: --channels {','.join(map(str, channels))} asks for "
            f"channel position {max(channels)} but the images have K={n_channels} channels "
            f"(positions 0..{n_channels - 1})"
        )
    return images[:, channels]


def count_batches(manifest: pd.DataFrame, batch_size: int) -> int:
    shapes = manifest.groupby(["n_channels", "height", "width"]).size()
    return int(sum(math.ceil(n / batch_size) for n in shapes))


def extract_features(
    backbone: torch.nn.Module,
    family: str,
    manifest: pd.DataFrame,
    store: ShardStore,
    n_rows: int,
    recipes: list[str],
    crop_size: int,
    batch_size: int,
    device: torch.device | str = "cpu",
    manifest_path: str = "<manifest>",
    channels: list[int] | None = None,
    prepare=None,
) -> dict[str, np.ndarray]:
    """Features of every manifest image: recipe -> float32 ``(n_rows, F)`` ordered by manifest row.

    ``channels``: channel positions to keep, in order (None = all). Channel-ViT backbones get
    them as ``channel_ids`` (each kept channel keeps its own embedding); other families see
    fewer channels. ``prepare`` replaces :func:`prepare_batch` (uint8 batch -> backbone input;
    the augmented probe protocol's centre crop and normalisation).
    """
    family = canonical_family(family)
    recipes = check_recipes(recipes)
    check_rows(manifest, n_rows, manifest_path)
    n_blocks = n_last_blocks_needed(recipes)
    device = torch.device(device)
    backbone = backbone.to(device).eval()
    out: dict[str, np.ndarray] = {}
    progress = ProgressLogger(count_batches(manifest, batch_size), every=10, unit="img", logger=log)
    # on CPU each batch's large temporaries are reused, not faulted in again (host_memory.py)
    with torch.no_grad(), freed_host_memory_kept(device.type == "cpu"):
        for step, (rows, images) in enumerate(iter_batches(manifest, store, batch_size)):
            images = select_channels(images, channels, manifest_path)
            x = (prepare or (lambda im: prepare_batch(im, crop_size)))(images).to(device)
            if family == "cvit" and channels is not None:
                ids = torch.tensor(channels, dtype=torch.long, device=device)
                emb = backbone.embed(
                    x, n_last_blocks=n_blocks, channel_ids=ids.expand(len(x), len(channels))
                )
            else:
                emb = backbone.embed(x, n_last_blocks=n_blocks)
            feats = make_all_features(emb, recipes, family)
            for recipe, f in feats.items():
                f = f.float().cpu().numpy()
                if recipe not in out:
                    out[recipe] = np.zeros((n_rows, f.shape[1]), dtype=np.float32)
                elif out[recipe].shape[1] != f.shape[1]:
                    raise UserError(
                        f"manifest {manifest_path}: recipe {recipe} gives {f.shape[1]} features for images of shape "
                        f"{images.shape[1:]} but {out[recipe].shape[1]} for earlier images; mixed channel counts?"
                    )
                out[recipe][rows] = f
            progress.step(step, items=len(rows))
    if not out:
        raise UserError(f"manifest {manifest_path} lists no images")
    return out


def count_metadata_rows(path: str | os.PathLike) -> int:
    """Number of data rows of a CSV metadata table (what feature rows must align with)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"metadata {path} does not exist")
    try:
        return len(pd.read_csv(path, usecols=[0]))
    except pd.errors.EmptyDataError:
        raise UserError(f"metadata {path} is empty (a truncated copy?)") from None


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="pretraining checkpoint (.pt)")
    parser.add_argument(
        "--manifest",
        required=True,
        action="append",
        help="<shards>/<dataset>/manifest.parquet; repeatable (with --out-dir, and --metadata "
        "if used, given as many times, in the same order) to embed several datasets in one load",
    )
    parser.add_argument(
        "--metadata",
        action="append",
        default=None,
        help="the source's metadata table (e.g. <root>/<dataset>/enriched_meta.csv); "
        "output rows are aligned with its rows. Omitted: one output row per manifest row "
        "(the manifest's row values must then be 0..len(manifest)-1)",
    )
    parser.add_argument(
        "--out-dir", required=True, action="append", help="directory for <recipe>.npy; repeatable"
    )
    parser.add_argument(
        "--recipes", required=True, help="comma-separated recipes, e.g. cls1,cls4_pool"
    )
    parser.add_argument("--crop-size", type=int, required=True, help="centre crop size S (pixels)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--channels",
        default=None,
        help="comma-separated channel positions to keep, in this order (default: all)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument(
        "--which", default="teacher", choices=["teacher", "student"], help="weights to use"
    )


def run(args: argparse.Namespace) -> int:
    from channel_ssl.train.checkpoint import load_backbone

    if args.threads:
        torch.set_num_threads(args.threads)
    recipes = check_recipes([r.strip() for r in args.recipes.split(",") if r.strip()])
    metadata = args.metadata or [None] * len(args.manifest)
    if not len(args.manifest) == len(args.out_dir) == len(metadata):
        raise UserError(
            f"give --manifest ({len(args.manifest)}), --out-dir ({len(args.out_dir)}) and, if "
            f"used, --metadata ({len(metadata)}) the same number of times"
        )
    channels = parse_channels(args.channels)
    backbone, run_config = load_backbone(args.checkpoint, which=args.which)
    family = run_config["model"]["family"]
    for manifest_arg, meta, out_dir in zip(args.manifest, metadata, args.out_dir, strict=True):
        manifest_path = Path(manifest_arg)
        manifest = load_manifest(manifest_path)
        n_rows = len(manifest) if meta is None else count_metadata_rows(meta)
        log.info(
            "extracting %s from %s (%s, %d images, channels %s) -> %s",
            recipes,
            args.checkpoint,
            family,
            len(manifest),
            "all" if channels is None else channels,
            out_dir,
        )
        store = ShardStore(manifest_path if manifest_path.is_dir() else manifest_path.parent)
        feats = extract_features(
            backbone,
            family,
            manifest,
            store,
            n_rows,
            recipes,
            args.crop_size,
            args.batch_size,
            resolve_device(args.device),
            str(manifest_path),
            channels,
        )
        for recipe, array in feats.items():
            save_npy(os.path.join(out_dir, f"{recipe}.npy"), array)
            log.info("wrote %s/%s.npy %s", out_dir, recipe, array.shape)
    return 0


def step_io(args) -> StepIO:
    """What this step read and wrote, for its provenance record."""
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    inputs = [args.checkpoint] + [manifest_file(m) for m in args.manifest]
    inputs += list(args.metadata or [])
    return StepIO(
        inputs=inputs,
        outputs=[os.path.join(d, f"{r}.npy") for d in args.out_dir for r in recipes],
    )
