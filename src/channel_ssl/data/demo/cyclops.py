"""Demo copy of CYCLoPs in its per-class folder layout (:mod:`channel_ssl.data.readers.cyclops`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import tifffile

from channel_ssl.atomic import atomic_path
from channel_ssl.data.readers.cyclops import (
    CHANNELS,
    FOLDER,
    FOLDER_FREQUENCIES,
    FOLDERS,
)
from channel_ssl.errors import UserError

log = logging.getLogger("channel_ssl.data.cyclops")

DEMO_SIZE = 24


def folder_counts(total: int) -> dict[str, int]:
    """Images per folder: largest-remainder rounding of ``FOLDER_FREQUENCIES`` to ``total`` (>= 3 each)."""
    freq = np.array(list(FOLDER_FREQUENCIES.values())) / sum(FOLDER_FREQUENCIES.values())
    raw = freq * total
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    # a stratified 60/20/20 split needs a few images of every class
    return {f: max(3, int(c)) for f, c in zip(FOLDERS, counts, strict=True)}


def _disc(yy, xx, cy, cx, r) -> np.ndarray:
    return np.hypot(yy - cy, xx - cx) / r


def render_yeast(rng: np.random.Generator, folder: str, size: int = DEMO_SIZE) -> np.ndarray:
    """One yeast cell (2, size, size) float in [0, 1]: GFP pattern of ``folder``, RFP reference."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    cy, cx = size / 2 + rng.normal(0, 0.8, 2)
    r = size * rng.uniform(0.24, 0.28)
    budded = folder in ("BUDTIP", "BUDNECK", "ACTIN") or rng.random() < 0.3
    angle = rng.uniform(0, 2 * np.pi)
    rb = r * 0.6
    by, bx = cy + (r + rb * 0.7) * np.sin(angle), cx + (r + rb * 0.7) * np.cos(angle)
    mother = _disc(yy, xx, cy, cx, r)
    bud = _disc(yy, xx, by, bx, rb) if budded else np.full_like(mother, 9.0)
    cell = ((mother < 1) | (bud < 1)).astype(float)
    ny, nx = cy + rng.normal(0, r * 0.1), cx + rng.normal(0, r * 0.1)
    nucleus_d = _disc(yy, xx, ny, nx, r * 0.38)
    nucleus = (nucleus_d < 1).astype(float)
    vy, vx = (
        cy - r * 0.35 * np.sin(angle),
        cx - r * 0.35 * np.cos(angle),
    )  # vacuole opposite the bud
    vacuole_d = _disc(yy, xx, vy, vx, r * 0.42)

    def dots(n, rmin, rmax, radius, within=1.0):
        out = np.zeros_like(cell)
        for _ in range(n):
            a, d = rng.uniform(0, 2 * np.pi), rng.uniform(rmin, rmax) * r
            out = np.maximum(out, _disc(yy, xx, cy + d * np.sin(a), cx + d * np.cos(a), radius) < 1)
        return out * cell * within

    def ring(d, width=0.18):
        return np.exp(-((d - 1.0) ** 2) / (2 * width**2))

    cyto = cell * (1 - nucleus)
    if folder == "CYTOPLASM":
        gfp = 0.7 * cyto
    elif folder == "NUCLEI":
        gfp = nucleus
    elif folder == "NUCLEOLUS":
        gfp = (_disc(yy, xx, ny + r * 0.15, nx, r * 0.18) < 1).astype(float)
    elif folder == "NUCLEARPERIPHERY":
        gfp = ring(nucleus_d, 0.12)
    elif folder == "ER":
        gfp = 0.8 * ring(nucleus_d, 0.12) + 0.6 * ring(mother, 0.06) * (mother < 1.1)
    elif folder == "CELLPERIPHERY":
        gfp = np.maximum(ring(mother, 0.06), ring(bud, 0.06) if budded else 0)
    elif folder == "MITOCHONDRIA":
        gfp = dots(7, 0.45, 0.85, 1.1) + 0.3 * dots(5, 0.4, 0.8, 1.6)
    elif folder == "VACUOLE":
        gfp = (vacuole_d < 1).astype(float)
    elif folder == "VACUOLARMEMBRANE":
        gfp = ring(vacuole_d, 0.1)
    elif folder == "GOLGI":
        gfp = dots(4, 0.3, 0.8, 1.3)
    elif folder == "ENDOSOME":
        gfp = dots(3, 0.3, 0.6, 1.8)
    elif folder == "PEROXISOME":
        gfp = dots(12, 0.2, 0.9, 0.7)
    elif folder in ("SPINDLE", "SPINDLEPOLE"):
        a = rng.uniform(0, np.pi)
        along = (xx - nx) * np.cos(a) + (yy - ny) * np.sin(a)
        across = -(xx - nx) * np.sin(a) + (yy - ny) * np.cos(a)
        if folder == "SPINDLE":
            gfp = ((np.abs(across) < 0.8) & (np.abs(along) < r * 0.55)).astype(float)
        else:
            d = r * 0.4
            gfp = (
                (_disc(yy, xx, ny + d * np.sin(a), nx + d * np.cos(a), 1.2) < 1)
                | (_disc(yy, xx, ny - d * np.sin(a), nx - d * np.cos(a), 1.2) < 1)
            ).astype(float)
    elif folder == "BUDTIP":
        ty, tx = by + rb * 0.8 * np.sin(angle), bx + rb * 0.8 * np.cos(angle)
        gfp = (_disc(yy, xx, ty, tx, 1.6) < 1).astype(float)
    elif folder == "BUDNECK":
        ky, kx = cy + r * np.sin(angle), cx + r * np.cos(angle)
        gfp = (_disc(yy, xx, ky, kx, 2.0) < 1) * cell
    elif folder == "ACTIN":
        patches = np.zeros_like(cell)
        for _ in range(6):
            d, a = rng.uniform(0, 0.9) * rb, rng.uniform(0, 2 * np.pi)
            patches = np.maximum(
                patches, _disc(yy, xx, by + d * np.sin(a), bx + d * np.cos(a), 1.0) < 1
            )
        gfp = patches * cell + 0.15 * cyto
    else:
        raise UserError(f"unknown Cyclops folder {folder!r}")
    rfp = 0.35 * cell + 0.5 * nucleus
    stack = np.stack([gfp * rng.uniform(0.7, 1.0), rfp]) + rng.normal(0, 0.04, (2, size, size))
    return np.clip(stack + 0.05, 0, 1)


def make_demo(raw_dir: str | os.PathLike, seed: int = 0, scale: float = 1.0) -> Path:
    """Write ``raw_dir/cyclops/<LABEL>/<LABEL>_<n>_{gfp,rfp}.tif`` (uint16 24x24); returns the folder."""
    root = Path(raw_dir) / FOLDER
    rng = np.random.default_rng(seed)
    counts = folder_counts(max(len(FOLDERS) * 3, round(300 * scale)))
    for folder, count in counts.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for n in range(1, count + 1):
            stack = render_yeast(rng, folder)
            for channel, plane in zip(CHANNELS, stack, strict=True):
                with atomic_path(root / folder / f"{folder}_{n}_{channel}.tif") as tmp:
                    tifffile.imwrite(tmp, np.round(plane * 4095).astype(np.uint16))  # 12-bit camera
    log.info("demo Cyclops: %d cells in %d folders -> %s", sum(counts.values()), len(counts), root)
    return root
