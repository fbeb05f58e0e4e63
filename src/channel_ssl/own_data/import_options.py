"""The options of ``import-images``: its flags, their checks, and the table they name columns of."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from channel_ssl.errors import UserError


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
