"""JUMP-CP as processed by Bao et al. (ChannelViT): reader and demo copy in the native layout.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.atomic import atomic_path, save_npy
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


# --------------------------------------------------------------------------- demo copy

# The first targets of the real factorisation order (docs/datasets.md), then two more
DEMO_TARGETS = ("CACNB4", "CACNA2D3", "AKR1C1", "KCNN4", "NTRK1", "HDAC1")
DEMO_DMSO_WELLS = ("A01", "B02", "C03", "D04")
DEMO_UNMAPPED_WELL = "P24"  # imaged but absent from the platemap: must be dropped
DEMO_SIZE = 32


@dataclass(frozen=True)
class CompoundEffect:
    """How a target changes a cell (1 / 0 = no change)."""

    size: float = 1.0  # cell radius factor
    elongation: float = 1.0  # x/y axis ratio
    nucleus: float = 1.0  # nucleus radius factor (DNA)
    fragments: int = 0  # nuclear fragments (DNA)
    mito_spots: int = 6  # mitochondrial spots (Mito)
    er_gain: float = 1.0  # ER intensity (ER)
    nucleoli: int = 1  # RNA spots in the nucleus (RNA)
    fibres: int = 0  # stress fibres (AGP)
    vacuoles: int = 0  # dark vacuoles (all channels; visible in brightfield)


def _effect_of(target: str, seed: int) -> CompoundEffect:
    """Two strong, target-specific changes drawn from a target-keyed stream; DMSO changes nothing."""
    if target == DMSO:
        return CompoundEffect()
    rng = np.random.default_rng([seed, *target.encode()])
    kinds = rng.choice(7, size=2, replace=False)
    values: dict = {}
    for kind in kinds:
        if kind == 0:
            values["size"] = float(rng.choice([0.7, 1.3]))
        elif kind == 1:
            values["elongation"] = float(rng.uniform(1.6, 2.0))
        elif kind == 2:
            values["nucleus"], values["fragments"] = 0.6, int(rng.integers(3, 5))
        elif kind == 3:
            values["mito_spots"] = int(rng.choice([0, 16]))
        elif kind == 4:
            values["er_gain"] = float(rng.choice([0.3, 2.5]))
            values["nucleoli"] = 4
        elif kind == 5:
            values["fibres"] = int(rng.integers(3, 5))
        else:
            values["vacuoles"] = int(rng.integers(2, 4))
    return CompoundEffect(**values)


def _ellipse(yy, xx, cy, cx, ry, rx, angle=0.0) -> np.ndarray:
    """Squared normalised radius of an ellipse at every pixel."""
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u, v = c * dx + s * dy, -s * dx + c * dy
    return (u / rx) ** 2 + (v / ry) ** 2


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (reflect padding)."""
    radius = max(1, int(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(image, radius, mode="reflect")
    rows = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, k, mode="valid"), 0, rows)


def render_cell(
    rng: np.random.Generator, effect: CompoundEffect, size: int = DEMO_SIZE
) -> np.ndarray:
    """One cell, (8, size, size) uint8, channels in :data:`CHANNELS` order."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = size / 2 + rng.normal(0, 1.0, 2)
    radius = size * 0.3 * effect.size * rng.uniform(0.9, 1.1)
    rx = min(radius * np.sqrt(effect.elongation), size * 0.48)
    ry = radius / np.sqrt(effect.elongation)
    angle = rng.uniform(0, np.pi)
    cell_r = _ellipse(yy, xx, cy, cx, ry, rx, angle)
    cell = (cell_r < 1).astype(float)
    nuc_r = radius * 0.45 * effect.nucleus
    nucleus_r = _ellipse(yy, xx, cy, cx, nuc_r, nuc_r)
    nucleus = (nucleus_r < 1).astype(float)
    cyto = cell * (1 - nucleus)

    dna = nucleus.copy()
    for _ in range(effect.fragments):
        a, d = rng.uniform(0, 2 * np.pi), radius * rng.uniform(0.5, 0.8)
        blob = _ellipse(yy, xx, cy + d * np.sin(a), cx + d * np.cos(a), 1.6, 1.6)
        dna = np.maximum(dna, (blob < 1) * cell)

    er = cyto * (0.4 + 0.6 * np.exp(-((nucleus_r - 1.0) ** 2) / 2.0)) * effect.er_gain

    rna = 0.25 * cell
    for _ in range(effect.nucleoli):
        oy, ox = rng.normal(0, nuc_r * 0.3, 2)
        rna = rna + (_ellipse(yy, xx, cy + oy, cx + ox, 1.3, 1.3) < 1) * 0.9

    mito = np.zeros_like(cell)
    for _ in range(effect.mito_spots):
        a, d = rng.uniform(0, 2 * np.pi), rng.uniform(nuc_r * 1.1, max(nuc_r * 1.2, radius * 0.9))
        mito = mito + (_ellipse(yy, xx, cy + d * np.sin(a), cx + d * np.cos(a), 1.2, 1.2) < 1)
    mito = np.clip(mito, 0, 1) * cell + 0.1 * cyto

    membrane = np.exp(-((np.sqrt(cell_r) - 1.0) ** 2) / 0.02)
    agp = 0.8 * membrane + 0.15 * cyto
    for _ in range(effect.fibres):
        a, off = angle + rng.normal(0, 0.15), rng.uniform(-0.6, 0.6) * ry
        dist = np.abs(-np.sin(a) * (xx - cx) + np.cos(a) * (yy - cy) - off)
        agp = agp + 0.8 * (dist < 0.8) * cell

    vacuole = np.zeros_like(cell)
    for _ in range(effect.vacuoles):
        a, d = rng.uniform(0, 2 * np.pi), rng.uniform(nuc_r * 1.2, max(nuc_r * 1.3, radius * 0.8))
        vacuole = np.maximum(
            vacuole, _ellipse(yy, xx, cy + d * np.sin(a), cx + d * np.cos(a), 2.2, 2.2) < 1
        )
    vacuole = vacuole * cell

    edge = _blur(cell, 1.0)
    high_z = 0.5 + 0.4 * _blur(cell, 2.5) - 0.3 * vacuole
    low_z = (
        0.5 - 0.35 * np.exp(-((np.sqrt(cell_r) - 1.1) ** 2) / 0.05) + 0.2 * nucleus - 0.3 * vacuole
    )
    brightfield = 0.5 + 0.3 * (edge - _blur(cell, 2.0)) * 4 - 0.4 * vacuole + 0.1 * nucleus

    fluo = [mito, agp, rna, er, dna]
    fluo = [_blur(np.clip(ch * (1 - vacuole), 0, None), 0.7) for ch in fluo]
    stack = np.stack([*fluo, high_z, low_z, brightfield])
    gains = np.array([180, 170, 160, 150, 200, 120, 120, 120], float)[:, None, None]
    stack = stack * gains * rng.uniform(0.85, 1.15) + rng.normal(0, 4.0, stack.shape)
    stack[:5] += 6.0  # camera offset; the real fluorescence means are ~4-7 in these units
    return np.clip(np.round(stack), 0, 255).astype(np.uint8)


def _save_parquet(path: Path, df: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def make_demo(raw_dir: str | os.PathLike, seed: int = 0, scale: float = 1.0) -> Path:
    """Write a small JUMP-CP copy in the native layout under ``raw_dir/jumpcp``; returns that folder.

    6 targets x 2 compounds (one well each) + 4 DMSO wells + 1 well not in the platemap; per well
    2 fields x ``round(4 * scale)`` cells of (8, 32, 32) uint8. Deterministic in ``seed``.
    """
    root = Path(raw_dir) / FOLDER
    plate = PLATES[0]
    rng = np.random.default_rng(seed)
    cells_per_field = max(1, round(4 * scale))

    metadata = [
        {
            "broad_sample": None,
            "InChIKey": "IAZDPXIOMUYVGZ-UHFFFAOYSA-N",
            "pert_iname": DMSO,
            "pubchem_cid": 679,
            "target": None,
            "pert_type": "control",
            "control_type": "negcon",
            "smiles": "CS(C)=O",
        }
    ]
    platemap = [
        {"well_position": w, "broad_sample": None, "solvent": DMSO} for w in DEMO_DMSO_WELLS
    ]
    well_target = {w: DMSO for w in DEMO_DMSO_WELLS}
    free_wells = [f"{r}{c:02d}" for r in "EFGHIJKL" for c in range(5, 20)]
    well_iter = iter(free_wells[:: max(1, len(free_wells) // (2 * len(DEMO_TARGETS)))])
    for t_index, target in enumerate(DEMO_TARGETS):
        for k in range(2):  # two compounds per target, one well each (as JUMP-Target-1)
            sample = f"BRD-K{10000000 + 97 * t_index + k:08d}-001-01-{k}"
            metadata.append(
                {
                    "broad_sample": sample,
                    "InChIKey": f"DEMO{t_index:02d}{k}-UHFFFAOYSA-N",
                    "pert_iname": f"demo-{target.lower()}-{k}",
                    "pubchem_cid": 1000 + 10 * t_index + k,
                    "target": target,
                    "pert_type": "trt",
                    "control_type": None,
                    "smiles": "C" * (t_index + k + 1),
                }
            )
            well = next(well_iter)
            platemap.append({"well_position": well, "broad_sample": sample, "solvent": DMSO})
            well_target[well] = target
    meta_dir = root / META_DIR
    _save_parquet(meta_dir / METADATA_NAME, pd.DataFrame(metadata, columns=list(METADATA_COLUMNS)))
    _save_parquet(meta_dir / PLATEMAP_NAME, pd.DataFrame(platemap, columns=list(PLATEMAP_COLUMNS)))

    imaged = sorted(well_target) + [DEMO_UNMAPPED_WELL]
    effects = {t: _effect_of(t, seed) for t in (DMSO, *DEMO_TARGETS)}
    rows = []
    (root / plate).mkdir(parents=True, exist_ok=True)
    for well in imaged:
        effect = effects[well_target.get(well, DMSO)]
        for field in (1, 2):
            for cell in range(cells_per_field):
                cell_id = f"{plate}_{well}_{field}_{cell}"
                image = render_cell(rng, effect)
                save_npy(root / plate / f"{cell_id}.npy", image)
                rows.append(
                    {
                        "ID": cell_id,
                        "well_loc": well,
                        "path": f"{BUCKET_PREFIX}{FOLDER}/{plate}/{cell_id}.npy",
                        "plate_id": plate,
                    }
                )
    _save_parquet(root / f"{plate}.pq", pd.DataFrame(rows, columns=list(CELL_TABLE_COLUMNS)))
    log.info("demo JUMP-CP: %d cells in %d wells -> %s", len(rows), len(imaged), root)
    return root
