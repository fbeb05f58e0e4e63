"""The one reader of CHAMMI on disk, for the real benchmark and for the demo alike.

Layout (docs/paper.md section 3)::

    <root>/{Allen,HPA,CP}/enriched_meta.csv   one row per image
    <root>/<file_path>                         the image, channels side by side ("unfolded")

``file_path`` is relative to ``<root>`` and starts with the dataset folder. Each image is
one 2-D grayscale array of shape ``(H, channel_width * K)``; folding it is the column-major
reshape to ``(H, channel_width, K)`` used by the CHAMMI evaluation package, which here is
returned channel-first as ``(K, H, channel_width)``. Allen images are ``.ome.tiff`` (read with
tifffile), HPA and CP images ``.png`` (read with Pillow).

The boolean ``Task_x`` columns must equal ``train_test_split == 'Task_x'``; the reference
evaluation selects task rows with them, so a disagreement is an error, not a warning.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.errors import UserError

DATASETS = ("Allen", "HPA", "CP")
METADATA_NAME = "enriched_meta.csv"

# Channel order of the unfolded images (docs/paper.md section 3).
CHANNELS: dict[str, tuple[str, ...]] = {
    "Allen": ("nucleus", "membrane", "protein"),
    "HPA": ("microtubules", "protein", "nucleus", "er"),
    "CP": ("dna", "er", "rna", "agp", "mito"),
}

ALL_TASKS = ("Task_one", "Task_two", "Task_three", "Task_four")
TASKS: dict[str, tuple[str, ...]] = {
    "Allen": ALL_TASKS[:2],
    "HPA": ALL_TASKS[:3],
    "CP": ALL_TASKS[:4],
}
TRAIN_SPLIT = "Train"

# Leave-one-group-out tasks of the reference evaluation: task -> grouping column.
LEAVE_OUT: dict[str, tuple[str, str] | None] = {
    "Allen": None,
    "HPA": ("Task_three", "cell_type"),
    "CP": ("Task_four", "Plate"),
}

# Factors of variation kept as metadata (the reference evaluation colours its UMAPs by them).
FACTOR_COLUMNS: dict[str, tuple[str, ...]] = {
    "Allen": ("Structure",),
    "HPA": ("cell_type",),
    "CP": ("Plate", "source"),
}
BASE_COLUMNS = ("file_path", "channel_width", "train_test_split", "Label")

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise UserError(f"unknown CHAMMI dataset {dataset!r}; expected one of {list(DATASETS)}")


def channel_names(dataset: str) -> tuple[str, ...]:
    """Channel names of ``dataset`` in the order they appear in the unfolded image."""
    _check_dataset(dataset)
    return CHANNELS[dataset]


def tasks_of(dataset: str) -> tuple[str, ...]:
    """Evaluation tasks of ``dataset`` (``Task_one`` ...), in order."""
    _check_dataset(dataset)
    return TASKS[dataset]


def group_column(dataset: str) -> str | None:
    """Grouping column of the leave-one-group-out task (HPA ``cell_type``, CP ``Plate``; Allen None)."""
    _check_dataset(dataset)
    spec = LEAVE_OUT[dataset]
    return spec[1] if spec else None


def leave_out_task(dataset: str) -> str | None:
    """The task evaluated leave-one-group-out (HPA ``Task_three``, CP ``Task_four``; Allen None)."""
    _check_dataset(dataset)
    spec = LEAVE_OUT[dataset]
    return spec[0] if spec else None


def required_columns(dataset: str) -> tuple[str, ...]:
    """Columns every ``enriched_meta.csv`` of ``dataset`` must have."""
    _check_dataset(dataset)
    return BASE_COLUMNS + FACTOR_COLUMNS[dataset]


def metadata_path(root: str | os.PathLike, dataset: str) -> Path:
    return Path(root) / dataset / METADATA_NAME


def _parse_bool_column(values: pd.Series, path: Path, column: str) -> np.ndarray:
    """Booleans as written by pandas (``True``/``False``), tolerating other spellings."""
    text = values.astype(str).str.strip().str.lower()
    bad = ~text.isin(_TRUE | _FALSE)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(
            f"{path}: column {column!r} row {i} has non-boolean value {values.iloc[i]!r}"
        )
    return text.isin(_TRUE).to_numpy()


def read_metadata_csv(path: str | os.PathLike) -> pd.DataFrame:
    """One ``enriched_meta.csv`` as text columns; UserError naming it if it has no rows.

    Everything is read as text so plate ids like 24307 or ids with leading zeros stay as
    written. An empty file (pandas: "No columns to parse from file") and a header without
    rows are both errors that name the file: a truncated download or copy looks like that.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as exc:
        raise UserError(
            f"CHAMMI metadata {path} is empty (no header, no rows); it was probably cut short "
            "by an interrupted download or copy: fetch or copy it again"
        ) from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"CHAMMI metadata {path} is not a readable CSV: {exc}") from exc
    if df.empty:
        raise UserError(
            f"CHAMMI metadata {path} has a header but no rows (columns {list(df.columns)}); "
            "it was probably cut short: fetch or copy it again"
        )
    return df


def read_metadata(root: str | os.PathLike, dataset: str) -> pd.DataFrame:
    """Read and validate ``<root>/<dataset>/enriched_meta.csv``.

    Returns a DataFrame in file order with a fresh RangeIndex (row i = image i, the order
    feature arrays follow). Every column is read as text except ``channel_width`` (int) and
    the ``Task_x`` columns (bool); missing text values become ``""`` (an unlabelled image has
    ``Label == ""``).

    Raises:
        FileNotFoundError: the CSV does not exist.
        UserError: the file is empty or has a header but no rows, missing columns (all named), unknown split values, a non-positive or
            non-integer ``channel_width``, a task present in ``train_test_split`` without its
            boolean column, or a boolean column that disagrees with ``train_test_split``.
    """
    _check_dataset(dataset)
    path = metadata_path(root, dataset)
    if not path.exists():
        raise FileNotFoundError(f"CHAMMI metadata {path} does not exist")
    df = read_metadata_csv(path)
    missing = [c for c in required_columns(dataset) if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing required column(s) {missing}")

    widths = pd.to_numeric(df["channel_width"], errors="coerce")
    bad = widths.isna() | (widths <= 0) | (widths % 1 != 0)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(
            f"{path}: row {i} has invalid channel_width {df['channel_width'].iloc[i]!r}"
        )
    df["channel_width"] = widths.astype(np.int64)

    allowed = (TRAIN_SPLIT,) + TASKS[dataset]
    unknown = ~df["train_test_split"].isin(allowed)
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        raise UserError(
            f"{path}: row {i} has train_test_split {df['train_test_split'].iloc[i]!r}; "
            f"expected one of {list(allowed)}"
        )

    present_splits = set(df["train_test_split"])
    for task in TASKS[dataset]:
        if task not in df.columns:
            if task in present_splits:
                raise UserError(
                    f"{path}: train_test_split uses {task!r} but the boolean column {task!r} is missing"
                )
            continue
        flags = _parse_bool_column(df[task], path, task)
        expected = (df["train_test_split"] == task).to_numpy()
        wrong = flags != expected
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            raise UserError(
                f"{path}: row {i}: column {task}={bool(flags[i])} disagrees with "
                f"train_test_split={df['train_test_split'].iloc[i]!r}"
            )
        df[task] = flags
    return df.reset_index(drop=True)


def fold_channels(image: np.ndarray, channel_width: int) -> np.ndarray:
    """Unfolded ``(H, channel_width * K)`` image -> channel stack ``(K, H, channel_width)``.

    Column-major reshape to ``(H, channel_width, K)`` as the CHAMMI evaluation package does;
    channel k is columns ``[k * channel_width, (k + 1) * channel_width)``.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D unfolded image, got shape {image.shape}")
    height, width = image.shape
    if channel_width <= 0 or width % channel_width:
        raise ValueError(f"image width {width} is not a multiple of channel_width {channel_width}")
    folded = np.reshape(image, (height, channel_width, width // channel_width), order="F")
    return np.ascontiguousarray(np.moveaxis(folded, -1, 0))


def unfold_channels(stack: np.ndarray) -> np.ndarray:
    """Channel stack ``(K, H, W)`` -> unfolded ``(H, W * K)`` (inverse of :func:`fold_channels`)."""
    if stack.ndim != 3:
        raise ValueError(f"expected a (K, H, W) stack, got shape {stack.shape}")
    return np.concatenate(list(stack), axis=1)


def _row_label(row) -> str:
    name = getattr(row, "name", None)
    return f"row {name}" if name is not None else "row"


def read_unfolded(path: str | os.PathLike) -> np.ndarray:
    """Read one unfolded CHAMMI image file as a 2-D array (``.tif``/``.tiff`` or Pillow formats)."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        image = tifffile.imread(path)
    else:
        from PIL import Image

        with Image.open(path) as im:
            image = np.asarray(im)
    image = np.asarray(image)
    # A singleton channel axis (e.g. a 'L' image stored with samples) is harmless.
    if image.ndim == 3 and 1 in (image.shape[0], image.shape[-1]):
        image = image.reshape(image.shape[0] if image.shape[-1] == 1 else image.shape[1], -1)
    return image


def load_image(root: str | os.PathLike, row, n_channels: int | None = None) -> np.ndarray:
    """Load the image of one metadata row as ``(K, H, channel_width)``, dtype as stored.

    Args:
        root: CHAMMI root (the directory holding ``Allen/``, ``HPA/``, ``CP/``).
        row: a metadata row (Series or mapping) with ``file_path`` and ``channel_width``.
        n_channels: if given, the expected K; a mismatch (wrong ``channel_width``) raises.

    Raises:
        FileNotFoundError: the file does not exist (path and row named).
        UserError: the file cannot be decoded, is not 2-D, or does not fold into the
            expected channels (path, row and channel_width named).
    """
    path = Path(root) / str(row["file_path"])
    width = int(row["channel_width"])
    where = f"{path} ({_row_label(row)})"
    if not path.exists():
        raise FileNotFoundError(f"CHAMMI image {where} does not exist")
    try:
        image = read_unfolded(path)
    except Exception as exc:  # any decoder failure means a corrupt or foreign file
        raise UserError(f"cannot read CHAMMI image {where}: {exc}") from exc
    if image.ndim != 2:
        raise UserError(
            f"CHAMMI image {where} has shape {image.shape}; expected a 2-D unfolded image"
        )
    if width <= 0 or image.shape[1] % width:
        raise UserError(
            f"CHAMMI image {where} has width {image.shape[1]}, not a multiple of channel_width {width}"
        )
    stack = fold_channels(image, width)
    if n_channels is not None and stack.shape[0] != n_channels:
        raise UserError(
            f"CHAMMI image {where} folds into {stack.shape[0]} channels with channel_width {width}; "
            f"expected {n_channels}"
        )
    return stack
