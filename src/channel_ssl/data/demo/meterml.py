"""Demo copy of METER-ML in its native layout (:mod:`channel_ssl.data.readers.meterml`)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from channel_ssl.atomic import atomic_path, save_npy, write_text
from channel_ssl.data.readers.meterml import (
    CLASSES,
    SENTINEL_STATS,
    TRAIN_SUBDIRS,
    file_name,
)

log = logging.getLogger("channel_ssl.data.meterml")

DEMO_NAIP = 48
DEMO_SIZES = {"sentinel-2-10m": 12, "sentinel-2-20m": 6, "sentinel-2-60m": 2, "sentinel-1": 12}
DEMO_SPLIT_SIZES = {"train": 60, "val": 20, "test": 30}
# label sets cycled through in every split: negatives, each class alone, two co-occurrences
DEMO_LABEL_CYCLE = (
    (),
    *((c,) for c in CLASSES),
    ("CAFOs", "Landfills"),
    ("RefineriesAndTerminals", "ProcessingPlants"),
    (),
)
MATERIALS = ("vegetation", "soil", "water", "metal", "pit")
# per material: reflectance-like signature per band, in units of the band's std around its mean
_SIGNATURE = {
    "naip": np.array(
        [
            [-1.0, -0.2, -1.0, 1.5],
            [1.0, 0.8, 0.5, 0.2],
            [-1.5, -1.2, -0.5, -2.0],
            [1.8, 1.8, 1.8, 0.8],
            [-1.8, -1.8, -1.6, -1.6],
        ]
    ),
    "sentinel-2-10m": np.array(
        [
            [-0.8, -0.1, -0.8, 1.5],
            [1.0, 0.8, 0.6, 0.0],
            [-1.2, -1.0, -0.4, -1.8],
            [1.6, 1.6, 1.6, 0.6],
            [-1.5, -1.5, -1.4, -1.5],
        ]
    ),
    "sentinel-2-20m": np.array(
        [
            [-0.5, 0.8, 1.2, 1.3, -0.5, -0.8],
            [0.8, 0.6, 0.4, 0.4, 1.2, 1.3],
            [-1.2, -1.4, -1.5, -1.5, -1.8, -1.6],
            [1.2, 1.0, 0.8, 0.8, 0.9, 1.0],
            [-1.4, -1.2, -1.0, -1.0, -0.6, -0.4],
        ]
    ),
    "sentinel-2-60m": np.array(
        [[-0.3, 0.6, 0.0], [0.6, -0.2, 0.0], [-0.8, -1.0, 0.0], [0.9, 0.2, 0.3], [-1.0, -0.5, 0.0]]
    ),
    "sentinel-1": np.array([[0.2, 0.8], [-0.3, -0.5], [-1.8, -1.8], [2.0, 1.0], [-0.8, -1.0]]),
}


def _scene(rng: np.random.Generator, classes: tuple[str, ...], size: int) -> np.ndarray:
    """(5, size, size) material fractions (sum 1 per pixel) of a scene showing ``classes``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float) / size
    frac = np.zeros((len(MATERIALS), size, size))
    frac[0] = 1.0

    def paint(material: str, mask: np.ndarray) -> None:
        k = MATERIALS.index(material)
        frac[:, mask] = 0.0
        frac[k, mask] = 1.0

    # a road and a house or two anywhere: confusers shared by every scene
    a = rng.uniform(0, np.pi)
    paint(
        "soil",
        np.abs(np.cos(a) * (xx - 0.5) + np.sin(a) * (yy - 0.5) - rng.uniform(-0.4, 0.4)) < 0.025,
    )
    for _ in range(rng.integers(0, 3)):
        y0, x0 = rng.uniform(0.05, 0.85, 2)
        paint("metal", (np.abs(yy - y0) < 0.03) & (np.abs(xx - x0) < 0.03))
    for cls in classes:
        cy, cx = rng.uniform(0.3, 0.7, 2)
        if cls == "CAFOs":  # long parallel barns and a lagoon
            for k in range(3):
                paint(
                    "metal", (np.abs(yy - (cy - 0.2 + 0.12 * k)) < 0.035) & (np.abs(xx - cx) < 0.3)
                )
            paint("water", (np.abs(yy - (cy + 0.22)) < 0.06) & (np.abs(xx - cx + 0.15) < 0.1))
        elif cls == "WWTreatment":  # round clarifier tanks
            for k in range(3):
                ty, tx = cy + 0.22 * np.sin(2.1 * k), cx + 0.22 * np.cos(2.1 * k)
                d = np.hypot(yy - ty, xx - tx)
                paint("metal", d < 0.11)
                paint("water", d < 0.08)
        elif cls == "RefineriesAndTerminals":  # a grid of small storage tanks
            for gy in range(3):
                for gx in range(3):
                    paint(
                        "metal",
                        np.hypot(yy - (cy - 0.2 + 0.2 * gy), xx - (cx - 0.2 + 0.2 * gx)) < 0.06,
                    )
        elif cls == "Landfills":  # a large irregular bare mound
            r = 0.28 + 0.06 * np.sin(5 * np.arctan2(yy - cy, xx - cx) + rng.uniform(0, 6))
            paint("soil", np.hypot(yy - cy, xx - cx) < r)
        elif cls == "Mines":  # a dark pit ringed by spoil
            d = np.hypot(yy - cy, xx - cx)
            paint("soil", d < 0.3)
            paint("pit", d < 0.2)
        elif cls == "ProcessingPlants":  # compact cluster of small units on a pad
            paint("soil", (np.abs(yy - cy) < 0.16) & (np.abs(xx - cx) < 0.16))
            for _ in range(5):
                uy, ux = cy + rng.uniform(-0.12, 0.12), cx + rng.uniform(-0.12, 0.12)
                paint("metal", (np.abs(yy - uy) < 0.025) & (np.abs(xx - ux) < 0.025))
    return frac


def _downsample(frac: np.ndarray, size: int) -> np.ndarray:
    """Area-average (M, S, S) to (M, size, size); S must be a multiple of size."""
    m, s, _ = frac.shape
    f = s // size
    return frac.reshape(m, size, f, size, f).mean(axis=(2, 4))


def _render_product(rng: np.random.Generator, frac: np.ndarray, product: str) -> np.ndarray:
    """Band values (H, W, C) of one product from material fractions."""
    signature = _SIGNATURE[product]  # (materials, bands)
    z = np.einsum("mhw,mb->hwb", frac, signature) + rng.normal(
        0, 0.15, frac.shape[1:] + (signature.shape[1],)
    )
    if product == "naip":
        return np.clip(np.round(128 + 50 * z), 0, 255).astype(np.uint8)
    mean, std = (np.asarray(v) for v in SENTINEL_STATS[product])
    return np.clip(np.round(mean + std * z), 0, 16383).astype(np.uint16)


def make_demo(raw_dir: str | os.PathLike, seed: int = 0, scale: float = 1.0) -> Path:
    """Write a small Meter-ML copy in the native layout directly under ``raw_dir``; returns it."""
    root = Path(raw_dir)
    rng = np.random.default_rng(seed)
    for split, base in DEMO_SPLIT_SIZES.items():
        n = max(len(DEMO_LABEL_CYCLE), round(base * scale))
        features = []
        for i in range(n):
            classes = DEMO_LABEL_CYCLE[i % len(DEMO_LABEL_CYCLE)]
            lat, lon = 30 + rng.uniform(0, 15), -120 + rng.uniform(0, 45)
            name = f"{lat:.7f}_{lon:.7f}"
            image_folder = f"{split}_images/{name}"
            folder = root / (
                f"train_images/{TRAIN_SUBDIRS[i % 3]}/{name}" if split == "train" else image_folder
            )
            frac = _scene(rng, classes, DEMO_NAIP)
            naip = _render_product(rng, frac, "naip")
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(folder / "naip.png") as tmp:
                Image.fromarray(naip, mode="RGBA").save(tmp)
            for product, size in DEMO_SIZES.items():
                save_npy(
                    folder / file_name(product),
                    _render_product(rng, _downsample(frac, size), product),
                )
            features.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [lon, lat]},
                    "properties": {
                        "Image_Folder": image_folder,
                        "Type": "-".join(classes) or "Negative",
                    },
                }
            )
        write_text(
            root / f"{split}_dataset.geojson",
            json.dumps({"type": "FeatureCollection", "features": features}, indent=1) + "\n",
        )
    log.info("demo Meter-ML -> %s", root)
    return root
