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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.atomic import current_umask, write_json, write_table
from channel_ssl.errors import UserError
from channel_ssl.own_data.images import ImageError, read_image

log = logging.getLogger("channel_ssl.own_data.import")

DATASET_FILE = "dataset.json"
SKIPPED_FILE = "skipped.csv"
SPLITS = ("train", "val", "test")
SPLIT_SPELLINGS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


@dataclass
class ImportOptions:
    """What ``import-images`` does with the table (its flags, defaults filled in)."""

    path_columns: list[str] = field(default_factory=lambda: ["path"])
    label_columns: list[str] = field(default_factory=lambda: ["label"])
    group_column: str | None = None
    split_column: str | None = None
    split: str = "random"
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0
    channels: list[str] | None = None
    image_size: int | None = None
    channel_axis: int | None = None
    channel_width: int | None = None
    skip_bad: bool = False
    shard_size: int = 1024
    name: str = "own"


class BadRow(Exception):
    """One table row that cannot be imported (the message says why)."""


# ------------------------------------------------------------------------------- checks
def parse_channel_names(text: str | None) -> list[str] | None:
    """``"DNA,ER,RNA"`` -> ``["DNA", "ER", "RNA"]``; UserError on empty, repeated or ``|`` names."""
    if text is None:
        return None
    names = [part.strip() for part in text.split(",")]
    if not names or any(not n for n in names):
        raise UserError(f"--channels {text!r}: give comma-separated, non-empty channel names")
    if len(set(names)) != len(names):
        raise UserError(f"--channels {text!r}: a channel name is listed twice")
    if any("|" in n for n in names):
        raise UserError(f"--channels {text!r}: channel names cannot contain '|'")
    return names


def check_options(options: ImportOptions) -> None:
    if not 0 <= options.val_fraction < 1 or not 0 <= options.test_fraction < 1:
        raise UserError("--val-fraction and --test-fraction must lie in [0, 1)")
    if options.val_fraction + options.test_fraction >= 1:
        raise UserError("--val-fraction + --test-fraction must leave images for training (< 1)")
    if options.split == "group" and not options.group_column:
        raise UserError("--split group needs --group-column")
    if options.split not in ("random", "group"):
        raise UserError(f"--split {options.split!r}: expected random or group")
    if options.image_size is not None and options.image_size < 1:
        raise UserError(f"--image-size must be >= 1, got {options.image_size}")
    if len(options.path_columns) > 1:
        if options.channel_width is not None:
            raise UserError("--channel-width reads one file per image: give one --path-column")
        if options.channels is not None and len(options.channels) != len(options.path_columns):
            raise UserError(
                f"--channels names {len(options.channels)} channel(s) but --path-column is given "
                f"{len(options.path_columns)} times (one file per channel)"
            )


def read_table(path: str | os.PathLike, options: ImportOptions) -> pd.DataFrame:
    """The table as strings (empty cells ''); UserError naming a column it lacks and listing its own."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"table {path} does not exist")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"table {path} is not a readable CSV file: {exc}") from exc
    wanted = [(c, "--path-column") for c in options.path_columns]
    wanted += [(c, "--label-column") for c in options.label_columns]
    if options.group_column:
        wanted.append((options.group_column, "--group-column"))
    if options.split_column:
        wanted.append((options.split_column, "--split-column"))
    for column, flag in wanted:
        if column not in table.columns:
            raise UserError(
                f"table {path} has no column {column!r} ({flag}); its columns are: "
                + ", ".join(repr(str(c)) for c in table.columns)
            )
    if table.empty:
        raise UserError(f"table {path} has no rows")
    return table


# -------------------------------------------------------------------------------- splits
def _carve(
    rows: np.ndarray, strata: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, carved) rows, ``fraction`` of them carved, stratified when every stratum allows."""
    from sklearn.model_selection import train_test_split

    if fraction <= 0 or len(rows) < 2:
        return rows, rows[:0]
    try:
        return train_test_split(rows, test_size=fraction, random_state=seed, stratify=strata)
    except ValueError as exc:
        log.warning("stratified split impossible (%s); drawing it unstratified", exc)
        return train_test_split(rows, test_size=fraction, random_state=seed)


def random_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> np.ndarray:
    """``(n,)`` split names, stratified by ``labels`` (seeded)."""
    labels = np.asarray(labels).astype(str)
    rows = np.arange(len(labels))
    rest, test = _carve(rows, labels, test_fraction, seed)
    val_share = val_fraction / (1 - test_fraction) if test_fraction < 1 else 0.0
    train, val = _carve(rest, labels[rest], val_share, seed)
    out = np.empty(len(labels), dtype=object)
    out[train], out[val], out[test] = "train", "val", "test"
    return out


def group_split(
    groups: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> np.ndarray:
    """``(n,)`` split names with every group in one split (module docstring)."""
    groups = np.asarray(groups).astype(str)
    names, counts = np.unique(groups, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(names))
    n = len(groups)
    assigned: dict[str, str] = {}
    filled = {"test": 0, "val": 0}
    targets = {"test": test_fraction * n, "val": val_fraction * n}
    for i in order:
        target = next((s for s in ("test", "val") if filled[s] < targets[s]), "train")
        assigned[names[i]] = target
        if target != "train":
            filled[target] += counts[i]
    split = np.array([assigned[g] for g in groups], dtype=object)
    if not (split == "train").any():
        raise UserError(
            f"--split group: {len(names)} group(s) are too few to leave any for training "
            f"with --val-fraction {val_fraction} and --test-fraction {test_fraction}"
        )
    return split


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


# ----------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = ImportOptions()
    parser.add_argument("--images", required=True, help="folder the table's paths are relative to")
    parser.add_argument("--table", required=True, help="CSV table, one row per image")
    parser.add_argument(
        "--out", required=True, help="output folder (shards, manifest, dataset.json)"
    )
    parser.add_argument(
        "--path-column",
        action="append",
        help="column with the image file (default 'path'); give it once per channel when each "
        "channel is its own file",
    )
    parser.add_argument(
        "--label-column",
        action="append",
        help="label column (default 'label'); repeatable, the first is the manifest's label",
    )
    parser.add_argument("--group-column", help="plate / field of view / donor column")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--split-column", help="column holding train/val/test")
    how.add_argument(
        "--split",
        choices=["random", "group"],
        default=d.split,
        help="random: stratified by the first label; group: each group in one split",
    )
    parser.add_argument("--val-fraction", type=float, default=d.val_fraction)
    parser.add_argument("--test-fraction", type=float, default=d.test_fraction)
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the split")
    parser.add_argument("--channels", help="channel names in file order, e.g. DNA,ER,RNA")
    parser.add_argument(
        "--image-size", type=int, help="square side every image is resized to (default: own size)"
    )
    parser.add_argument("--channel-axis", type=int, help="axis of a 3-D file holding the channels")
    parser.add_argument(
        "--channel-width", type=int, help="channels side by side: width of one channel (pixels)"
    )
    parser.add_argument(
        "--skip-bad", action="store_true", help="skip bad rows (listed in <out>/skipped.csv)"
    )
    parser.add_argument("--shard-size", type=int, default=d.shard_size, help="images per shard")
    parser.add_argument("--name", default=d.name, help="the manifest's source name")


def options_from_args(args: argparse.Namespace) -> ImportOptions:
    return ImportOptions(
        path_columns=list(args.path_column or ["path"]),
        label_columns=list(args.label_column or ["label"]),
        group_column=args.group_column,
        split_column=args.split_column,
        split=args.split,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        channels=parse_channel_names(args.channels),
        image_size=args.image_size,
        channel_axis=args.channel_axis,
        channel_width=args.channel_width,
        skip_bad=args.skip_bad,
        shard_size=args.shard_size,
        name=args.name,
    )


def run(args: argparse.Namespace) -> int:
    import_images(args.images, args.table, args.out, options_from_args(args))
    return 0
