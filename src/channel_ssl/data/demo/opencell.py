"""Demo copy of OpenCell in its native layout (:mod:`channel_ssl.data.readers.opencell`)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.atomic import save_npy, write_table
from channel_ssl.data.demo.draw import (
    render_hpa,
    stable_rng,
)
from channel_ssl.data.readers.opencell import (
    LABEL_COLUMNS,
)

log = logging.getLogger("channel_ssl.opencell")

# demo localisation (OpenCell-style grade name) -> HPA pattern the demo renderer draws
DEMO_LOCALISATIONS = {
    "nucleoplasm": "nucleoplasm",
    "cytoplasmic": "cytosol",
    "mitochondria": "mitochondria",
    "golgi": "golgi apparatus",
    "er": "endoplasmic reticulum",
    "nuclear_punctae": "nuclear speckles",
}


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

    raw = Path(raw_dir)
    rng = stable_rng(seed, "opencell-plan")
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
            cell = render_hpa(
                stable_rng(seed, "opencell", int(k)),
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
