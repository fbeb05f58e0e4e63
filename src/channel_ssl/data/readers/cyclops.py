"""CYCLoPs yeast protein localisation (as used by Microsnoop): reader of the native layout.

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
