"""A small synthetic folder of multichannel TIFFs and its table, to try ``import-images`` on.

``python -m channel_ssl.own_data.demo_images OUT [--per-class 100] [--size 32] [--seed 0]``
writes ``OUT/images/<plate>/<class>_<i>.tif``, uint16 ``(C, H, W)`` = 3 pages (channels
``nucleus``, ``protein``, ``membrane``), and ``OUT/labels.csv`` with columns
``path, label, plate`` (paths relative to ``OUT/images``).

Each image is one cell: a nucleus, a membrane ring and a protein whose pattern is the label —
``nuclear`` (inside the nucleus), ``cytoplasmic`` (between nucleus and membrane) or
``punctate`` (a few bright spots in the cytoplasm). Cell and nucleus size and position, the
number of spots, the brightness (a per-plate factor times a per-cell one) and camera noise vary;
the protein's total brightness does not depend on the label. Synthetic, for a walk-through: the
numbers it gives say nothing about real microscopy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

CLASSES = ("nuclear", "cytoplasmic", "punctate")
CHANNELS = ("nucleus", "protein", "membrane")
PLATES = ("plate1", "plate2", "plate3", "plate4")


def draw_cell(label: str, size: int, rng: np.random.Generator, brightness: float) -> np.ndarray:
    """uint16 ``(3, size, size)`` image of one cell whose protein pattern is ``label``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = size / 2 + rng.normal(0, size / 20, 2)
    radius = size * 0.36 * rng.uniform(0.85, 1.1)
    ny, nx = cy + rng.normal(0, size / 25), cx + rng.normal(0, size / 25)
    n_radius = radius * rng.uniform(0.4, 0.55)
    d_cell = np.hypot(yy - cy, xx - cx)
    d_nucleus = np.hypot(yy - ny, xx - nx)
    nucleus = np.exp(-((d_nucleus / n_radius) ** 4))
    cell = np.exp(-((d_cell / radius) ** 6))
    membrane = np.exp(-(((d_cell - radius) / (size / 24)) ** 2))
    if label == "nuclear":
        protein = nucleus * rng.uniform(0.7, 1.0, nucleus.shape)
    elif label == "cytoplasmic":
        protein = np.clip(cell - nucleus, 0, None) * rng.uniform(0.7, 1.0, cell.shape)
    elif label == "punctate":
        protein = np.zeros_like(cell)
        for _ in range(rng.integers(4, 9)):
            angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(n_radius * 1.1, radius * 0.9)
            sy, sx = cy + dist * np.sin(angle), cx + dist * np.cos(angle)
            protein += np.exp(-(np.hypot(yy - sy, xx - sx) ** 2) / (2 * (size / 30) ** 2))
    else:
        raise ValueError(f"unknown class {label!r}; known: {CLASSES}")
    protein *= 0.25 * size**2 / max(protein.sum(), 1e-9)  # same total protein in every class
    stack = np.stack([nucleus, protein, membrane]) * brightness * 2000
    stack += rng.normal(100, 20, stack.shape)  # camera offset and read noise
    return np.clip(np.round(stack), 0, 65535).astype(np.uint16)


def write_demo_images(
    out: str | Path, per_class: int = 100, size: int = 32, seed: int = 0
) -> pd.DataFrame:
    """Write the demo folder (module docstring); returns the table written to ``labels.csv``."""
    import tifffile

    out = Path(out)
    rng = np.random.default_rng(seed)
    plate_gain = dict(zip(PLATES, rng.uniform(0.7, 1.3, len(PLATES)), strict=True))
    rows = []
    for label in CLASSES:
        for i in range(per_class):
            plate = PLATES[i % len(PLATES)]
            image = draw_cell(label, size, rng, plate_gain[plate] * rng.uniform(0.8, 1.2))
            path = Path(plate) / f"{label}_{i:04d}.tif"
            (out / "images" / plate).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(out / "images" / path, image, photometric="minisblack")
            rows.append({"path": path.as_posix(), "label": label, "plate": plate})
    table = pd.DataFrame(rows)
    table.to_csv(out / "labels.csv", index=False)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    table = write_demo_images(args.out, args.per_class, args.size, args.seed)
    print(f"wrote {len(table)} images and {Path(args.out) / 'labels.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
