"""JUMP-CP as processed by Bao et al. (ChannelViT): reader of the native layout.

Native layout (docs/datasets.md section 6; the public bucket ``s3://insitro-research-2023-context-vit``,
anonymous access), mirrored under ``<raw_dir>/jumpcp/`` (or ``<raw_dir>`` itself when it already
is that folder)::

    BR00116991.pq                  parquet, one row per cell: ID, well_loc, path, plate_id
    BR00116991/BR00116991_<well>_<field>_<cell>.npy     (8, 224, 224) per cell, 0..255 values
    platemap_and_metadata/JUMP-Target-1_compound_platemap.tsv   PARQUET despite the name:
                                                     well_position, broad_sample, solvent
    platemap_and_metadata/JUMP-Target-1_compound_metadata.tsv   PARQUET: broad_sample, InChIKey,
                                   pert_iname, pubchem_cid, target, pert_type, control_type, smiles

``path`` holds ``s3://insitro-research-2023-context-vit/jumpcp/<plate>/<file>.npy`` URIs. They are
mapped to local files by dropping the bucket and the leading ``jumpcp/`` and resolving the rest
against the local ``jumpcp`` folder (so ``aws s3 sync s3://.../jumpcp/ <raw_dir>/jumpcp/`` is all
the download needs); relative paths are resolved the same way, absolute local paths kept.

Labels follow ChannelViT's ``load_meta_data``: metadata inner-merged with the platemap on
``broad_sample``; ``pd.factorize(target) + 1`` so a NaN target (DMSO) is 0; the label of a cell is
looked up by its ``well_loc``; cells of wells missing from the platemap are dropped. At paper scale
(plate BR00116991, JUMP-Target-1 compound platemap) this gives 161 classes. The manifest ``label``
is the target name (``DMSO`` for class 0); ``factors.label_id`` is ChannelViT's integer label.

Split: ChannelViT's ``get_split`` on the plate table (before dropping unlabelled cells):
``np.random.seed(0); perm = np.random.permutation(df.index)``; train = first ``int(0.6 n)``, val =
next ``int(0.2 n)``, test = the rest.

Channels: Mito, AGP, RNA, ER, DNA, HighZBF, LowZBF, Brightfield. Source ``jumpcp`` keeps all 8;
``jumpcp_5ch`` keeps the five fluorescence channels (the paper's main JUMP-CP setting). Both read
the same raw folder. Values are kept in their 0..255 units (Bao et al.'s normalisation statistics
are in those units); arrays outside that range are rescaled by their maximum.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.data.preprocess import to_uint8
from channel_ssl.errors import UserError
from channel_ssl.npy import load_npy

log = logging.getLogger("channel_ssl.data.jumpcp")

CHANNELS = ("Mito", "AGP", "RNA", "ER", "DNA", "HighZBF", "LowZBF", "Brightfield")
FLUORESCENCE = CHANNELS[:5]
PLATES = ("BR00116991",)  # ChannelViT's jumpcp configs use this plate only
BUCKET_PREFIX = "s3://insitro-research-2023-context-vit/"
FOLDER = "jumpcp"
META_DIR = "platemap_and_metadata"
PLATEMAP_NAME = "JUMP-Target-1_compound_platemap.tsv"
METADATA_NAME = "JUMP-Target-1_compound_metadata.tsv"
CELL_TABLE_COLUMNS = ("ID", "well_loc", "path", "plate_id")
PLATEMAP_COLUMNS = ("well_position", "broad_sample", "solvent")
METADATA_COLUMNS = (
    "broad_sample",
    "InChIKey",
    "pert_iname",
    "pubchem_cid",
    "target",
    "pert_type",
    "control_type",
    "smiles",
)
DMSO = "DMSO"
SPLIT_FRACTIONS = (0.6, 0.2)  # train, val; test = rest
SPLIT_SEED = 0
SOURCE_CHANNELS = {"jumpcp": CHANNELS, "jumpcp_5ch": FLUORESCENCE}
_CELL_ID = re.compile(r"^(?P<plate>[^_]+)_(?P<well>[A-P]\d{2})_(?P<field>\d+)_(?P<cell>\d+)$")


# --------------------------------------------------------------------------- reading


def jumpcp_root(raw_dir: str | os.PathLike) -> Path:
    """The local copy of the bucket's ``jumpcp/`` folder: ``raw_dir/jumpcp`` or ``raw_dir``."""
    raw = Path(raw_dir)
    return raw / FOLDER if (raw / FOLDER).is_dir() else raw


def read_parquet_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Read a parquet table (whatever its suffix) and check it has ``columns``."""
    if not path.exists():
        raise FileNotFoundError(f"JUMP-CP table {path} does not exist")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for non-parquet input
        raise UserError(f"{path} is not a parquet file ({exc})") from exc
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(f"{path} lacks column(s) {missing}; has {list(df.columns)}")
    return df


def well_labels(root: Path) -> tuple[dict[str, int], list[str]]:
    """ChannelViT's compound label map.

    Returns ``(well_position -> label id, names)`` where ``names[i]`` is the target of id ``i``
    (``names[0] = 'DMSO'``: NaN target).
    """
    meta_dir = root / META_DIR
    platemap = read_parquet_table(meta_dir / PLATEMAP_NAME, ("well_position", "broad_sample"))
    metadata = read_parquet_table(meta_dir / METADATA_NAME, ("broad_sample", "target"))
    merged = metadata.merge(platemap, how="inner", on="broad_sample")
    codes, uniques = pd.factorize(merged["target"])
    codes = codes + 1  # NaN target (negative control) -> 0
    names = [DMSO] + [str(u) for u in uniques]
    return dict(zip(merged["well_position"].astype(str), codes.tolist(), strict=True)), names


def channelvit_split(n_rows: int, seed: int = SPLIT_SEED) -> np.ndarray:
    """(n_rows,) split names as ChannelViT's ``get_split`` on a table with a RangeIndex."""
    # RandomState(seed).permutation is the stream of np.random.seed(seed); np.random.permutation
    perm = np.random.RandomState(seed).permutation(pd.RangeIndex(n_rows))
    train_end = int(SPLIT_FRACTIONS[0] * n_rows)
    val_end = int(SPLIT_FRACTIONS[1] * n_rows) + train_end
    split = np.empty(n_rows, dtype=object)
    split[perm[:train_end]] = "train"
    split[perm[train_end:val_end]] = "val"
    split[perm[val_end:]] = "test"
    return split


def local_cell_path(root: Path, path: str) -> Path:
    """Map a ``path`` entry (s3 URI, relative or absolute) to a file under ``root``."""
    if path.startswith("s3://"):
        key = path[len("s3://") :].split("/", 1)[1] if "/" in path[5:] else ""
        parts = Path(key).parts
        if parts and parts[0] == FOLDER:
            parts = parts[1:]
        return root.joinpath(*parts)
    p = Path(path)
    return p if p.is_absolute() else root / p


def to_uint8_range(image: np.ndarray) -> np.ndarray:
    """Keep 0..255 data in its units (any dtype); rescale anything else by its maximum."""
    if image.dtype != np.uint8 and image.size and image.min() >= 0 and image.max() <= 255:
        return np.round(image).astype(np.uint8)
    return to_uint8(image)


def read_cells(raw_dir: str | os.PathLike, plates: tuple[str, ...] = PLATES) -> pd.DataFrame:
    """The cell table of ``plates`` (concatenated, RangeIndex) with ``split``, ``label_id``,
    ``label`` (target name, '' if the well is not in the platemap) and ``local_path`` columns."""
    root = jumpcp_root(raw_dir)
    tables = [read_parquet_table(root / f"{plate}.pq", CELL_TABLE_COLUMNS) for plate in plates]
    df = pd.concat(tables, ignore_index=True)
    df["split"] = channelvit_split(len(df))
    labels, names = well_labels(root)
    ids = df["well_loc"].astype(str).map(labels)
    df["label_id"] = ids.fillna(-1).astype(int)
    df["label"] = [names[i] if i >= 0 else "" for i in df["label_id"]]
    df["local_path"] = [str(local_cell_path(root, str(p))) for p in df["path"]]
    return df


def cell_items(raw_dir: str | os.PathLike, channels: tuple[str, ...]):
    """``(stack, fields)`` per labelled cell for :func:`channel_ssl.data.sources.write_source`.

    ``stack`` is (len(channels), H, W) uint8. Cells of wells without a label are dropped; manifest
    ``row`` numbers the kept cells 0..n-1 in plate-table order (``factors.table_row`` is the row
    in the concatenated plate table, the index ChannelViT's split permutes).
    """
    cells = read_cells(raw_dir)
    unlabelled = int((cells["label_id"] < 0).sum())
    if unlabelled:
        log.info("dropping %d cell(s) of wells not in the compound platemap", unlabelled)
    cells = cells[cells["label_id"] >= 0]
    for i, (table_row, cell) in enumerate(cells.iterrows()):
        path = Path(cell["local_path"])
        if not path.exists():
            raise FileNotFoundError(
                f"cell {cell['ID']} (row {table_row} of the plate table): {cell['path']} -> {path} does not exist"
            )
        stack = load_npy(path, "JUMP-CP cell array")
        if stack.ndim != 3 or stack.shape[0] != len(CHANNELS):
            raise UserError(f"{path}: expected ({len(CHANNELS)}, H, W), got shape {stack.shape}")
        factors = {
            "plate": str(cell["plate_id"]),
            "well": str(cell["well_loc"]),
            "label_id": int(cell["label_id"]),
            "target": str(cell["label"]),
            "table_row": int(table_row),
        }
        match = _CELL_ID.match(str(cell["ID"]))
        if match:
            factors.update(field=match["field"], cell=match["cell"])
        fields = {
            "image_id": str(cell["ID"]),
            "row": i,
            "channels": list(channels),
            "label": str(cell["label"]),
            "split": str(cell["split"]),
            "factors": factors,
        }
        yield to_uint8_range(stack[: len(channels)]), fields


def _prepare(source: str, raw_dir, out_dir, image_size: int, shard_size: int) -> pd.DataFrame:
    from channel_ssl.data.sources import write_source

    channels = SOURCE_CHANNELS[source]
    total = int((read_cells(raw_dir)["label_id"] >= 0).sum())
    return write_source(
        source, cell_items(raw_dir, channels), out_dir, image_size, shard_size, total
    )


def prepare(raw_dir, out_dir, image_size: int, shard_size: int) -> pd.DataFrame:
    """Source ``jumpcp``: all 8 channels -> shards (n, 8, image_size, image_size) + manifest."""
    return _prepare("jumpcp", raw_dir, out_dir, image_size, shard_size)


def prepare_5ch(raw_dir, out_dir, image_size: int, shard_size: int) -> pd.DataFrame:
    """Source ``jumpcp_5ch``: the 5 fluorescence channels -> shards (n, 5, S, S) + manifest."""
    return _prepare("jumpcp_5ch", raw_dir, out_dir, image_size, shard_size)
