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

from channel_ssl.errors import UserError
from channel_ssl.npy import load_npy

log = logging.getLogger("channel_ssl.opencell")

CHANNELS = ("protein", "nucleus")
KEPT_CHANNEL_INDICES = (0, 1)
LABEL_COLUMNS = ("ensg", "name", "loc_grade1", "loc_grade2", "loc_grade3", "protein_id", "FOV_id")
_IMAGE_FILE = re.compile(r"Image_data(\d+)\.npy$")


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
