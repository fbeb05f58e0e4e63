"""Demo copy of Cell Painting (cpg0019) in its native layout (:mod:`channel_ssl.data.readers.cellpainting`)."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.atomic import atomic_path, write_table
from channel_ssl.data.demo.chammi import (
    CP_NOVEL_TREATMENTS,
    CP_TRAIN_TREATMENTS,
    chammi_cells,
)
from channel_ssl.data.demo.draw import (
    cp_plate_acquisition,
    render_cp,
    stable_rng,
    unit_to_uint8,
)
from channel_ssl.data.readers.cellpainting import (
    IMAGE_ROOT,
    METADATA_COLUMNS,
    METADATA_PATHS,
    SOURCE_TO_COLLECTION,
)
from channel_ssl.data.readers.chammi import unfold_channels

log = logging.getLogger("channel_ssl.cellpainting")

# draw.render_cp draws CP cells as (DNA, ER, RNA, AGP, mito); cpg0019 crops hold CHANNELS order
_DEMO_TO_FILE_ORDER = [0, 2, 1, 3, 4]

DEMO_PLATES = (
    ("LINCS", "SQ00015116"), ("LINCS", "SQ00015195"), ("LINCS", "SQ00015129"),
    ("LINCS", "SQ00015125"), ("LINCS", "SQ00015168"), ("LINCS", "SQ00015221"),
    ("CDRP", "24307"), ("CDRP", "24308"), ("BBBC022", "20589"), ("BBBC022", "20633"),
)  # fmt: skip


def _crop(seed: int, key: str, treatment: str, source: str, plate: str, box: int) -> np.ndarray:
    """Demo crop (box, box * 6) uint8: five stains then the cell mask (BBBC022: no mask tile)."""

    rng = stable_rng(seed, "cp-source", key)
    stack = unit_to_uint8(
        render_cp(rng, treatment, source, cp_plate_acquisition(seed, source, plate), (box, box))
    )
    stack = stack[_DEMO_TO_FILE_ORDER]
    if source != "BBBC022":
        mask = (stack[[2, 3]].max(0) > 40).astype(np.uint8) * 255
        stack = np.concatenate([stack, mask[None]])
    return unfold_channels(stack)


def make_demo(raw_dir, seed: int = 0, scale: float = 1.0, chammi_root=None, n_images: int = 120,
              box: int = 24) -> pd.DataFrame:  # fmt: skip
    """Write a demo cpg0019 copy under ``raw_dir``; returns ``sc-metadata.csv`` as written.

    About ``n_images * scale`` crops: up to 8 CHAMMI CP cells of each split (same plate, well,
    site and name, so the same identity), then new cells over :data:`DEMO_PLATES` (the three
    held-out LINCS plates and BBBC022 included) and all seven demo compounds.
    """

    raw = Path(raw_dir)
    rng = stable_rng(seed, "cp-plan")
    treatments = CP_TRAIN_TREATMENTS + CP_NOVEL_TREATMENTS
    n_total = max(4, round(n_images * scale))
    cells = chammi_cells("CP", seed, chammi_root)
    per_split = min(8, n_total // 10)
    splits = ("Train", "Task_one", "Task_two", "Task_three", "Task_four")
    picked = pd.concat([cells[cells["train_test_split"] == s].head(per_split) for s in splits])
    plan = []
    for r in picked.itertuples():
        source, plate, well, site, name = (
            r.file_path.removeprefix("CP/crops/").removesuffix(".png").split("/")
        )
        plan.append((source, plate, well, site, name, r.Label))
    for k in range(n_total - len(plan)):
        source, plate = DEMO_PLATES[int(rng.integers(len(DEMO_PLATES)))]
        treatment = str(rng.choice(treatments))
        wi = (zlib.crc32(plate.encode()) + treatments.index(treatment) * 37) % 308
        well = f"{'BCDEFGHIJKLMNO'[wi % 14]}{2 + wi // 14:02d}"
        x, y = rng.uniform(20, 1060, 2)
        plan.append(
            (source, plate, well, str(1 + k % 9), f"{700_000 + k}@{x:.2f}x{y:.2f}", treatment)
        )
    rows = []
    for pos in rng.permutation(len(plan)):
        source, plate, well, site, name, treatment = plan[pos]
        collection = SOURCE_TO_COLLECTION[source]
        image_name = f"{plate}/{well}/{site}/{name}.png"
        path = raw / IMAGE_ROOT / collection / image_name
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            from PIL import Image

            Image.fromarray(
                _crop(seed, f"{collection}/{image_name}", treatment, source, plate, box)
            ).save(tmp, format="PNG")
        control = treatment == "DMSO"
        rows.append(
            {
                "Collection": collection,
                "Metadata_Plate": plate,
                "Metadata_Well": well,
                "Metadata_Site": site,
                "Image_Name": image_name,
                "Treatment": treatment,
                "Treatment_Type": "Control" if control else "Compound",
                "Control": str(control),
                "LeaveReplicatesOut": "Training" if rng.random() < 0.8 else "Validation",
                "LeaveCellsOut": "Training" if rng.random() < 0.8 else "Validation",
            }
        )
    meta = pd.DataFrame(rows, columns=list(METADATA_COLUMNS))
    write_table(raw / METADATA_PATHS[0], meta)
    log.info("demo Cell Painting: %d crops -> %s", len(meta), raw)
    return meta
