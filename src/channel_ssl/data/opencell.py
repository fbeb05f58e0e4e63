"""OpenCell crops as released with cytoself (Kobayashi et al. 2022; docs/datasets.md section 4).

Native layout (royerlab/cytoself ``README.md``, ``datamanager/opencell.py``)::

    <raw>/Image_data00.npy ... Image_dataNN.npy   array (N, 100, 100, 4), channels target protein,
                                                   nucleus, nuclear distance, nuclear segmentation
    <raw>/Label_data00.csv ... Label_dataNN.csv   one row per crop, row-aligned with the npy file

Label columns (third-party description, ASSUMED): ``ensg, name, loc_grade1, loc_grade2,
loc_grade3, protein_id, FOV_id``. The image dtype is not documented (the demo writes uint16).

Reading keeps the two fluorescence channels (protein, nucleus) as the paper does; the distance
map and segmentation are derived images, not stains. Channels are rescaled to uint8 per channel.
Manifest: ``label`` = ``loc_grade3`` (the most confident localisation grade; empty if none);
``split`` = ``all`` (cytoself splits at load time; ExtendedCHAMMI uses every crop);
factors ``protein``, ``ensg``, ``fov_id``, ``localisation`` (grade 3) and ``file``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.atomic import save_npy, write_table
from channel_ssl.errors import UserError
from channel_ssl.npy import load_npy

log = logging.getLogger("channel_ssl.opencell")

CHANNELS = ("protein", "nucleus")
KEPT_CHANNEL_INDICES = (0, 1)
LABEL_COLUMNS = ("ensg", "name", "loc_grade1", "loc_grade2", "loc_grade3", "protein_id", "FOV_id")
_IMAGE_FILE = re.compile(r"Image_data(\d+)\.npy$")

# demo localisation (OpenCell-style grade name) -> HPA pattern the demo renderer draws
DEMO_LOCALISATIONS = {
    "nucleoplasm": "nucleoplasm",
    "cytoplasmic": "cytosol",
    "mitochondria": "mitochondria",
    "golgi": "golgi apparatus",
    "er": "endoplasmic reticulum",
    "nuclear_punctae": "nuclear speckles",
}


def file_pairs(raw: Path) -> list[tuple[str, Path, Path]]:
    """``(index, Image_dataNN.npy, Label_dataNN.csv)`` in index order."""
    pairs = []
    for image in sorted(raw.glob("Image_data*.npy")):
        match = _IMAGE_FILE.search(image.name)
        if not match:
            continue
        label = raw / f"Label_data{match.group(1)}.csv"
        if not label.exists():
            raise FileNotFoundError(f"OpenCell {image} has no row-aligned {label.name}")
        pairs.append((match.group(1), image, label))
    if not pairs:
        raise FileNotFoundError(f"no Image_dataNN.npy in {raw}")
    return pairs


def prepare(raw_dir, out_dir, image_size: int, shard_size: int) -> pd.DataFrame:
    """OpenCell native layout -> shards (n, 2, S, S) + manifest; returns the manifest."""
    from channel_ssl.data.sources import write_source

    raw = Path(raw_dir)
    pairs = []
    total = 0
    for index, image_path, label_path in file_pairs(raw):
        images = load_npy(image_path, "OpenCell images", mmap_mode="r")
        labels = pd.read_csv(label_path, dtype=str, keep_default_na=False)
        if images.ndim != 4 or images.shape[-1] < max(KEPT_CHANNEL_INDICES) + 1:
            raise UserError(f"{image_path}: shape {images.shape}; expected (N, H, W, 4)")
        if len(labels) != images.shape[0]:
            raise UserError(
                f"{label_path} has {len(labels)} rows but {image_path} holds {images.shape[0]} images"
            )
        missing = [c for c in ("ensg", "name", "loc_grade3") if c not in labels.columns]
        if missing:
            raise UserError(f"{label_path}: missing column(s) {missing}")
        pairs.append((index, image_path, images, labels))
        total += len(labels)

    def items():
        row = 0
        for _, image_path, images, labels in pairs:
            for i, lab in labels.iterrows():
                stack = np.moveaxis(np.asarray(images[i][..., list(KEPT_CHANNEL_INDICES)]), -1, 0)
                fields = {
                    "image_id": f"{image_path.name}:{i}",
                    "row": row,
                    "channels": CHANNELS,
                    "label": lab["loc_grade3"],
                    "split": "all",
                    "factors": {
                        "protein": lab["name"],
                        "ensg": lab["ensg"],
                        "fov_id": lab.get("FOV_id", ""),
                        "localisation": lab["loc_grade3"],
                        "file": image_path.name,
                    },
                }
                row += 1
                yield stack, fields

    return write_source("opencell", items(), out_dir, image_size, shard_size, total=total)


# ---- demo --------------------------------------------------------------------------------


def _distance_to(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest True pixel of ``mask`` (brute force)."""
    ys, xs = np.nonzero(mask)
    yy, xx = np.indices(mask.shape)
    if len(ys) == 0:
        return np.full(mask.shape, float(max(mask.shape)))
    d2 = (yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2
    return np.sqrt(d2.min(-1))


def make_demo(raw_dir, seed: int = 0, scale: float = 1.0, n_images: int = 90, n_files: int = 3,
              image_size: int = 32) -> list[pd.DataFrame]:  # fmt: skip
    """Write a demo OpenCell (``n_files`` Image/Label pairs, ~``n_images * scale`` crops).

    HEK293T-like cells (the demo HEK 293 cell line) centred on the nucleus; the protein channel
    pattern is set by the protein's localisation; 12 demo proteins, several crops per FOV.
    """
    from channel_ssl.data.demo_chammi import _render_hpa, _stable_rng

    raw = Path(raw_dir)
    rng = _stable_rng(seed, "opencell-plan")
    locs = list(DEMO_LOCALISATIONS)
    proteins = [
        (f"ENSG{90000000000 + k:011d}", f"OCDEMO{k + 1}", locs[k % len(locs)]) for k in range(12)
    ]
    n_total = max(n_files, round(n_images * scale))
    tables = []
    for f, part in enumerate(np.array_split(np.arange(n_total), n_files)):
        images, rows = [], []
        for k in part:
            p = int(rng.integers(len(proteins)))
            ensg, name, loc = proteins[p]
            cell = _render_hpa(
                _stable_rng(seed, "opencell", int(k)),
                DEMO_LOCALISATIONS[loc],
                "HEK 293",
                (image_size, image_size),
            )
            protein, nucleus = np.clip(cell[1], 0, 1), np.clip(cell[2], 0, 1)
            seg = nucleus > 0.3
            image = np.stack(
                [protein * 4095, nucleus * 4095, _distance_to(seg), seg.astype(np.float32)], axis=-1
            )
            images.append(np.round(image).astype(np.uint16))
            rows.append(
                {
                    "ensg": ensg,
                    "name": name,
                    "loc_grade1": "",
                    "loc_grade2": "",
                    "loc_grade3": loc,
                    "protein_id": p,
                    "FOV_id": f"{name}_fov{int(k) // 4}",
                }
            )
        table = pd.DataFrame(rows, columns=list(LABEL_COLUMNS))
        save_npy(raw / f"Image_data{f:02d}.npy", np.stack(images))
        write_table(raw / f"Label_data{f:02d}.csv", table)
        tables.append(table)
    log.info("demo OpenCell: %d crops in %d files -> %s", n_total, n_files, raw)
    return tables
