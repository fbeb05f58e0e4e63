"""Demo copy of JUMP-CP in the ChannelViT layout (:mod:`channel_ssl.data.readers.jumpcp`)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.atomic import atomic_path, save_npy
from channel_ssl.data.demo.draw import (
    blur_reflect,
)
from channel_ssl.data.readers.jumpcp import (
    BUCKET_PREFIX,
    CELL_TABLE_COLUMNS,
    DMSO,
    FOLDER,
    META_DIR,
    METADATA_COLUMNS,
    METADATA_NAME,
    PLATEMAP_COLUMNS,
    PLATEMAP_NAME,
    PLATES,
)

log = logging.getLogger("channel_ssl.data.jumpcp")

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

    edge = blur_reflect(cell, 1.0)
    high_z = 0.5 + 0.4 * blur_reflect(cell, 2.5) - 0.3 * vacuole
    low_z = (
        0.5 - 0.35 * np.exp(-((np.sqrt(cell_r) - 1.1) ** 2) / 0.05) + 0.2 * nucleus - 0.3 * vacuole
    )
    brightfield = 0.5 + 0.3 * (edge - blur_reflect(cell, 2.0)) * 4 - 0.4 * vacuole + 0.1 * nucleus

    fluo = [mito, agp, rna, er, dna]
    fluo = [blur_reflect(np.clip(ch * (1 - vacuole), 0, None), 0.7) for ch in fluo]
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
