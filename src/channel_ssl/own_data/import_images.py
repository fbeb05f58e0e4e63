"""``channel-ssl import-images``: a folder of multichannel images + a CSV -> shards + manifest.

::

    channel-ssl import-images --images DIR --table TABLE.csv --out DIR
        [--path-column path ...] [--label-column label ...] [--group-column plate]
        [--split-column split | --split random|group] [--val-fraction 0.2]
        [--test-fraction 0.2] [--seed 0] [--channels DNA,ER,...] [--image-size 64]
        [--channel-axis N] [--channel-width W] [--skip-bad] [--shard-size 1024] [--name own]

One table row is one image. ``--path-column`` names the column with the image's file (a path
relative to ``--images``, or absolute); given once per channel, each row's channels are read
from one file each, in the order of the flags. The file layouts, and how the channel axis of a
multichannel file is found, are in :mod:`channel_ssl.own_data.images`.

Output ``--out`` (docs/own-data.md), built in a temporary directory beside it and renamed at
the end, so a failure leaves no half-written dataset (an existing output of this command is
replaced only once the new one is complete):

- ``shard-*.npy`` + ``manifest.parquet``: the project's preprocessed format
  (:mod:`channel_ssl.data.shards`), written by :func:`channel_ssl.data.sources.write_source`:
  every channel padded to square and resized to ``--image-size`` (default: the images' own
  size, which must then be the same for all), uint8 (other types rescaled per channel by its
  maximum, as CHAMMI was). Manifest ``label`` holds the first ``--label-column``; ``factors``
  (JSON) holds every label column and the group column under their CSV names, and
  ``table_line``, the row's line in the CSV; ``tasks`` lists the label columns the row has a
  value for; ``split`` is ``train``, ``val`` or ``test``; ``row`` numbers the imported images
  0..N-1; ``image_id`` is the path cell (cells joined by ``|`` for one file per channel).
- ``dataset.json``: channel names, label columns, group column, how the split was made and the
  counts per split and label (what ``evaluate-features`` reads).
- ``skipped.csv`` (with ``--skip-bad``): ``line, path, reason`` of every row left out.

Splits: ``--split-column`` takes the table's own (``train``/``val``/``test``; also
``training``, ``valid``, ``validation``, ``testing``, any case). ``--split random`` (default)
draws ``--test-fraction`` and ``--val-fraction`` of the images, stratified by the first label,
seeded by ``--seed``. ``--split group`` keeps every group (``--group-column``) in one split:
groups are drawn in a seeded random order into test, then val, until each holds its fraction of
the images; the rest are train.

A bad row (no path, missing file, unreadable file, wrong channel count, a size different from
the first image's when ``--image-size`` is not given, an unknown split value) stops the import
with an error naming its row, line and file; with ``--skip-bad`` it is logged, listed in
``skipped.csv`` and left out.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.atomic import current_umask, write_json, write_table
from channel_ssl.errors import UserError
from channel_ssl.own_data.images import ImageError, read_image
from channel_ssl.own_data.import_options import (
    ImportOptions,
    add_arguments,
    check_options,
    options_from_args,
    read_table,
)
from channel_ssl.own_data.splits import SPLIT_SPELLINGS, SPLITS, group_split, random_split
from channel_ssl.provenance import StepIO
from channel_ssl.step_io import shards_of

# the command's pieces, importable from here as before they got modules of their own
__all__ = [
    "DATASET_FILE",
    "SKIPPED_FILE",
    "ImportOptions",
    "add_arguments",
    "group_split",
    "import_images",
    "options_from_args",
    "random_split",
    "read_dataset_description",
    "run",
]

log = logging.getLogger("channel_ssl.own_data.import")

DATASET_FILE = "dataset.json"
SKIPPED_FILE = "skipped.csv"


class BadRow(Exception):
    """One table row that cannot be imported (the message says why)."""


# ------------------------------------------------------------------------------- reading
@dataclass
class _State:
    """What the first good image fixed: channel names and (without --image-size) the size."""

    channels: list[str] | None
    size: tuple[int, int] | None = None
    first: str = ""


def _row_where(table_name: str, index: int, files: str) -> str:
    return f"table {table_name} row {index + 1} (line {index + 2}), file {files}"


def _iter_images(
    table: pd.DataFrame,
    table_name: str,
    images_dir: Path,
    options: ImportOptions,
    skipped: list[dict],
) -> Iterator[tuple[np.ndarray, dict]]:
    """``(stack, fields)`` of every good row (fields as :func:`write_source` takes them)."""
    state = _State(channels=options.channels)
    kept = 0
    for index, record in enumerate(table.to_dict("records")):
        cells = [str(record[c]).strip() for c in options.path_columns]
        files = "|".join(cells)
        try:
            stack, split = _read_row(record, cells, images_dir, options, state)
        except BadRow as exc:
            where = _row_where(table_name, index, files or "(none)")
            if not options.skip_bad:
                raise UserError(f"{where}: {exc}") from None
            log.warning("skipped %s: %s", where, exc)
            skipped.append({"line": index + 2, "path": files, "reason": str(exc)})
            continue
        if state.size is None:
            state.size = stack.shape[1:]
            state.first = f"row {index + 1}, {files}"
        labels = {c: str(record[c]).strip() for c in options.label_columns}
        factors: dict = dict(labels)
        if options.group_column:
            factors[options.group_column] = str(record[options.group_column]).strip()
        factors["table_line"] = index + 2
        yield (
            stack,
            {
                "image_id": files,
                "row": kept,
                "channels": state.channels,
                "label": labels[options.label_columns[0]],
                "split": split,
                "tasks": "|".join(c for c, v in labels.items() if v),
                "factors": factors,
            },
        )
        kept += 1


def _read_row(
    record: dict, cells: list[str], images_dir: Path, options: ImportOptions, state: _State
) -> tuple[np.ndarray, str]:
    """One row's ``(K, H, W)`` image and split; BadRow saying what is wrong with it."""
    split = ""
    if options.split_column:
        value = str(record[options.split_column]).strip()
        split = SPLIT_SPELLINGS.get(value.lower(), "")
        if not split:
            raise BadRow(f"split value {value!r} is not one of train, val, test")
    if any(not c for c in cells):
        raise BadRow("no path in the path column")
    paths = [Path(c) if Path(c).is_absolute() else images_dir / c for c in cells]
    for path in paths:
        if not path.is_file():
            raise BadRow(f"{path} does not exist")
    try:
        stack = read_image(paths, options.channel_axis, options.channel_width)
    except ImageError as exc:
        raise BadRow(str(exc)) from None
    n_channels = stack.shape[0]
    if state.channels is None:
        state.channels = [f"ch{k}" for k in range(n_channels)]
        log.info(
            "no --channels given: the %d channels are named %s",
            n_channels,
            ",".join(state.channels),
        )
    if n_channels != len(state.channels):
        raise BadRow(
            f"it has {n_channels} channel(s) (shape {stack.shape}), expected "
            f"{len(state.channels)} ({','.join(state.channels)})"
        )
    if options.image_size is None and state.size is not None and stack.shape[1:] != state.size:
        raise BadRow(
            f"its size {stack.shape[1]}x{stack.shape[2]} differs from the first image's "
            f"{state.size[0]}x{state.size[1]} ({state.first}); give --image-size to resize all"
        )
    return stack, split


# ------------------------------------------------------------------------------- import
def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out``; an old ``out`` is removed only after the move."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.rmdir(old)
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / DATASET_FILE).exists():
        raise UserError(
            f"--out {out} exists and is not an output of import-images (no {DATASET_FILE}); "
            "choose a new directory"
        )


def import_images(
    images_dir: str | os.PathLike,
    table_path: str | os.PathLike,
    out: str | os.PathLike,
    options: ImportOptions,
) -> dict:
    """Import the table's images into ``out`` (module docstring); returns ``dataset.json``'s content."""
    from channel_ssl.data.shards import MANIFEST_NAME, write_manifest
    from channel_ssl.data.sources import write_source

    check_options(options)
    images_dir, out = Path(images_dir), Path(out)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"--images {images_dir} is not a directory")
    table = read_table(table_path, options)
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # what a plain mkdir would give, not 0700
        skipped: list[dict] = []
        items = _iter_images(table, Path(table_path).name, images_dir, options, skipped)
        first = next(items, None)
        if first is None:
            raise UserError(f"table {table_path}: none of its {len(table)} rows could be imported")
        stack, fields = first
        size = options.image_size or max(stack.shape[1:])
        manifest = write_source(
            options.name, itertools.chain([first], items), tmp, size, options.shard_size, len(table)
        )
        factors = [json.loads(f) for f in manifest["factors"]]
        if options.split_column:
            how = {"how": "column", "column": options.split_column}
        else:
            if options.split == "group":
                groups = np.array([f[options.group_column] for f in factors])
                split = group_split(
                    groups, options.val_fraction, options.test_fraction, options.seed
                )
            else:
                split = random_split(
                    manifest["label"].to_numpy(),
                    options.val_fraction,
                    options.test_fraction,
                    options.seed,
                )
            manifest["split"] = split
            write_manifest(tmp / MANIFEST_NAME, manifest)
            how = {
                "how": options.split,
                "val_fraction": options.val_fraction,
                "test_fraction": options.test_fraction,
                "seed": options.seed,
            }
        if options.skip_bad:
            write_table(
                tmp / SKIPPED_FILE, pd.DataFrame(skipped, columns=["line", "path", "reason"])
            )
        summary = {
            "source": options.name,
            "table": str(table_path),
            "images_dir": str(images_dir),
            "channels": fields["channels"],
            "labels": list(options.label_columns),
            "group": options.group_column,
            "split": how,
            "image_size": int(size),
            "images": len(manifest),
            "skipped": len(skipped),
            "split_counts": {s: int((manifest["split"] == s).sum()) for s in SPLITS},
            "label_counts": {
                c: {
                    str(k): int(v)
                    for k, v in pd.Series([f[c] for f in factors])
                    .value_counts()
                    .sort_index()
                    .items()
                }
                for c in options.label_columns
            },
            "options": asdict(options),
        }
        write_json(tmp / DATASET_FILE, summary)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "imported %d image(s) (%s channels %s, %d px; splits %s)%s -> %s",
        summary["images"],
        len(summary["channels"]),
        ",".join(summary["channels"]),
        size,
        summary["split_counts"],
        f"; skipped {len(skipped)} row(s), listed in {out / SKIPPED_FILE}" if skipped else "",
        out,
    )
    return summary


def read_dataset_description(dataset_dir: str | os.PathLike) -> dict | None:
    """``dataset.json`` of an imported dataset, or None (a dataset made by ``prepare-source``)."""
    path = Path(dataset_dir) / DATASET_FILE
    if not path.exists():
        return None
    with open(path) as fh:
        return json.load(fh)


def run(args: argparse.Namespace) -> int:
    import_images(args.images, args.table, args.out, options_from_args(args))
    return 0


def step_io(args) -> StepIO:
    """What this step read and wrote, for its provenance record: the table and every image file
    the manifest was made from; the manifest with its shards, dataset.json and skipped.csv."""
    manifest = os.path.join(args.out, "manifest.parquet")
    images = []
    if os.path.exists(manifest):
        for image_id in pd.read_parquet(manifest, columns=["image_id"])["image_id"]:
            images.extend(os.path.join(args.images, p) for p in image_id.split("|"))
    members = shards_of(manifest)
    members += [
        os.path.join(args.out, name)
        for name in ("dataset.json", "skipped.csv")
        if os.path.exists(os.path.join(args.out, name))
    ]
    return StepIO(
        inputs=[args.table, *images],
        outputs=[manifest],
        members=members,
        config=asdict(options_from_args(args)),
    )
