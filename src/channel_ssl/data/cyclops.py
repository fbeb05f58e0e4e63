"""CYCLoPs yeast protein localisation (as used by Microsnoop): reader and demo copy.

Native layout (docs/datasets.md section 7; Microsnoop's ``cyclops.gif`` listing), under
``<raw_dir>/cyclops/`` (or ``<raw_dir>`` itself when it is that folder)::

    <LABEL>/<LABEL>_<n>_gfp.tif     protein of interest (GFP fusion)
    <LABEL>/<LABEL>_<n>_rfp.tif     reference channel (RFP)

17 folders: ACTIN, BUDNECK, BUDTIP, CELLPERIPHERY, CYTOPLASM, ENDOSOME, ER, GOLGI, MITOCHONDRIA,
NUCLEARPERIPHERY, NUCLEI, NUCLEOLUS, PEROXISOME, SPINDLE, SPINDLEPOLE, VACUOLARMEMBRANE, VACUOLE.
The paper uses 16 classes; we merge SPINDLEPOLE into SPINDLE as CytoImageNet does for the same
data. That map is the plausible one, UNVERIFIED (Microsnoop's is in ``cyclops_labelmap.npy``).

Reader: pairs ``_gfp``/``_rfp`` files by (folder, n) -> 2 channels (gfp, rfp), each channel
scaled to uint8 by its own maximum when it is not 8-bit (per-channel self-normalisation follows,
so only the channel's shape matters). Rows are sorted by folder then n. A file without its
partner is an error naming it.

Split: the paper does not state one (Microsnoop evaluates by kNN). We use a stratified (by merged
class), seeded (seed 0) 60/20/20 train/val/test split, sklearn ``train_test_split`` twice.

Demo: ``round(300 * scale)`` cells, 24 x 24 uint16 TIFFs, class frequencies skewed so the four
rarest classes are those of the paper's table 2 (BUDTIP 1.5 %, CELLPERIPHERY 1.9 %, BUDNECK 2.4 %,
ACTIN 3.8 %); the other frequencies are made up (the real ones are UNVERIFIED). The GFP pattern
carries the class; RFP (assumed here: a nuclear + cytoplasmic reference) does not.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from sklearn.model_selection import train_test_split

from channel_ssl.atomic import atomic_path
from channel_ssl.errors import UserError

log = logging.getLogger("channel_ssl.data.cyclops")

FOLDER = "cyclops"
CHANNELS = ("gfp", "rfp")
# folder -> demo frequency (percent); the four rarest are the paper's table 2, the rest made up
FOLDER_FREQUENCIES = {
    "ACTIN": 3.8,
    "BUDNECK": 2.4,
    "BUDTIP": 1.5,
    "CELLPERIPHERY": 1.9,
    "CYTOPLASM": 18.0,
    "ENDOSOME": 5.0,
    "ER": 7.0,
    "GOLGI": 5.0,
    "MITOCHONDRIA": 9.0,
    "NUCLEARPERIPHERY": 6.5,
    "NUCLEI": 11.0,
    "NUCLEOLUS": 6.0,
    "PEROXISOME": 4.6,
    "SPINDLE": 3.0,
    "SPINDLEPOLE": 2.5,
    "VACUOLARMEMBRANE": 6.3,
    "VACUOLE": 6.5,
}
FOLDERS = tuple(FOLDER_FREQUENCIES)
MERGE = {"SPINDLEPOLE": "SPINDLE"}  # UNVERIFIED (CytoImageNet's merge); 17 folders -> 16 classes
CLASSES = tuple(f for f in FOLDERS if f not in MERGE)
RARE_CLASSES = ("BUDTIP", "CELLPERIPHERY", "BUDNECK", "ACTIN")  # paper table 2, rarest first
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
SPLIT_SEED = 0
_FILE = re.compile(r"^(?P<label>[A-Z]+)_(?P<n>\d+)_(?P<channel>gfp|rfp)\.tiff?$")


def class_of(folder: str) -> str:
    """The 16-class label of a folder (SPINDLEPOLE -> SPINDLE)."""
    return MERGE.get(folder, folder)


def cyclops_root(raw_dir: str | os.PathLike) -> Path:
    raw = Path(raw_dir)
    return raw / FOLDER if (raw / FOLDER).is_dir() else raw


def stratified_split(labels: np.ndarray, seed: int = SPLIT_SEED) -> np.ndarray:
    """(n,) 'train'/'val'/'test', stratified by label, 60/20/20, seeded."""
    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    rest, test = train_test_split(
        idx, test_size=SPLIT_FRACTIONS[2], random_state=seed, stratify=labels
    )
    val_share = SPLIT_FRACTIONS[1] / (SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1])
    train, val = train_test_split(
        rest, test_size=val_share, random_state=seed, stratify=labels[rest]
    )
    split = np.empty(len(labels), dtype=object)
    split[train], split[val], split[test] = "train", "val", "test"
    return split


def list_images(raw_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per (folder, n): ``folder, n, label, gfp, rfp, split`` (paths absolute)."""
    root = cyclops_root(raw_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"Cyclops folder {root} does not exist")
    pairs: dict[tuple[str, int], dict[str, Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in folder.iterdir():
            match = _FILE.match(path.name)
            if match is None:
                continue
            if match["label"] != folder.name:
                raise UserError(
                    f"{path}: file label {match['label']} is not its folder {folder.name}"
                )
            pairs.setdefault((folder.name, int(match["n"])), {})[match["channel"]] = path
    if not pairs:
        raise UserError(f"no <LABEL>/<LABEL>_<n>_{{gfp,rfp}}.tif files under {root}")
    rows = []
    for (folder, n), files in sorted(pairs.items()):
        missing = [c for c in CHANNELS if c not in files]
        if missing:
            have = next(iter(files.values()))
            raise UserError(f"{have} has no {missing[0]} partner ({folder}_{n}_{missing[0]}.tif)")
        rows.append(
            {
                "folder": folder,
                "n": n,
                "label": class_of(folder),
                **{c: str(files[c]) for c in CHANNELS},
            }
        )
    df = pd.DataFrame(rows)
    df["split"] = stratified_split(df["label"].to_numpy())
    return df


def image_items(images: pd.DataFrame):
    """``(stack, fields)`` per image of :func:`list_images` for ``write_source``; stack (2, H, W)."""
    for i, item in enumerate(images.itertuples(index=False)):
        planes = []
        for channel in CHANNELS:
            plane = tifffile.imread(getattr(item, channel))
            if plane.ndim != 2:
                raise UserError(
                    f"{getattr(item, channel)}: expected a 2-D image, got shape {plane.shape}"
                )
            planes.append(plane)
        if planes[0].shape != planes[1].shape:
            raise UserError(
                f"{item.gfp} and {item.rfp} differ in shape: {planes[0].shape} vs {planes[1].shape}"
            )
        fields = {
            "image_id": f"{item.folder}/{item.folder}_{item.n}",
            "row": i,
            "channels": list(CHANNELS),
            "label": item.label,
            "split": item.split,
            "factors": {"folder": item.folder},
        }
        yield np.stack(planes), fields


def prepare(raw_dir, out_dir, image_size: int, shard_size: int) -> pd.DataFrame:
    """Cyclops -> ``out_dir/shard-*.npy`` (n, 2, image_size, image_size) uint8 + manifest.

    Non-8-bit channels are scaled to uint8 each by its own maximum (``write_source``).
    """
    from channel_ssl.data.sources import write_source

    images = list_images(raw_dir)
    return write_source(
        "cyclops", image_items(images), out_dir, image_size, shard_size, len(images)
    )


# --------------------------------------------------------------------------- demo copy

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
