"""Demo copy of WTC in the quilt-package layout (:mod:`channel_ssl.data.readers.wtc`)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.atomic import atomic_path, write_table
from channel_ssl.data.demo.chammi import (
    ALLEN_HELDOUT_STRUCTURES,
    ALLEN_STAGES,
    ALLEN_TRAIN_STRUCTURES,
    chammi_cells,
)
from channel_ssl.data.demo.draw import (
    render_allen,
    stable_rng,
)
from channel_ssl.data.readers.wtc import (
    CHANNELS,
    GENE_TO_STRUCTURE,
    METADATA_COLUMNS,
)

log = logging.getLogger("channel_ssl.wtc")


def _volume(seed: int, cell_id: str, stage: str, structure: str, shape, n_z: int) -> np.ndarray:
    """Demo crop (Z, 3, Y, X) uint16: the drawn cell spread over Z with per-channel focus."""

    rng = stable_rng(seed, "wtc-source", cell_id)
    image = np.clip(render_allen(rng, stage, structure, shape), 0, 1)  # (3, Y, X)
    z = np.arange(n_z, dtype=np.float32)[:, None]
    focus = np.array([0.5, 0.5, rng.uniform(0.3, 0.7)]) * (n_z - 1)  # structure may sit off-centre
    profile = np.exp(-((z - focus[None]) ** 2) / (2 * (0.3 * n_z) ** 2))  # (Z, 3), max 1 in focus
    volume = profile[:, :, None, None] * image[None] * 4000.0 + 100.0  # camera offset
    volume += rng.normal(0, 20.0, volume.shape)
    return np.clip(np.round(volume), 0, 65535).astype(np.uint16)


def make_demo(raw_dir, seed: int = 0, scale: float = 1.0, chammi_root=None, n_images: int = 80,
              shape: tuple[int, int] = (24, 36), n_z: int = 6) -> pd.DataFrame:  # fmt: skip
    """Write a demo WTC in the quilt-package layout under ``raw_dir``; returns the metadata.

    About ``n_images * scale`` cells: up to 10 CHAMMI Allen cells each of Train, Task_one and
    Task_two (same CellId, stage and structure), then new cells of the seven demo structures
    (the held-out centrioles, tight junctions and actin bundles included); ~6 % outliers.
    """
    import tifffile

    raw = Path(raw_dir)
    to_gene = {s: g for g, s in GENE_TO_STRUCTURE.items()}
    structures = ALLEN_TRAIN_STRUCTURES + ALLEN_HELDOUT_STRUCTURES
    rng = stable_rng(seed, "wtc-plan")
    n_total = max(4, round(n_images * scale))
    cells = chammi_cells("Allen", seed, chammi_root)
    per_split = min(10, n_total // 6)
    picked = pd.concat(
        [
            cells[cells["train_test_split"] == s].head(per_split)
            for s in ("Train", "Task_one", "Task_two")
        ]
    )
    # CHAMMI's cells were not outliers (it was cut from the curated cells); only new cells may be
    plan = [
        (Path(r.file_path).name.split(".")[0], r.Label, r.Structure, False)
        for r in picked.itertuples()
    ]
    for k in range(n_total - len(plan)):
        plan.append(
            (str(900_000 + k), str(rng.choice(ALLEN_STAGES)), str(rng.choice(structures)), True)
        )
    rows = []
    for pos in rng.permutation(len(plan)):
        cell_id, stage, structure, may_be_outlier = plan[pos]
        digest = hashlib.sha256(f"{seed}/{cell_id}".encode()).hexdigest()
        crop = f"crop_raw/{digest}_raw.ome.tif"
        path = raw / crop
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tifffile.imwrite(
                tmp,
                _volume(seed, cell_id, stage, structure, shape, n_z),
                ome=True,
                metadata={
                    "axes": "ZCYX",
                    "Channel": {"Name": list(CHANNELS)},
                    "UUID": f"urn:uuid:{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}",
                },
            )
        fov = 10_000 + int(rng.integers(0, 5000))
        rows.append(
            {
                "CellId": cell_id,
                "FOVId": fov,
                "structure_name": to_gene[structure],
                "crop_raw": crop,
                "crop_seg": f"crop_seg/{digest}_segmentation.ome.tif",
                "name_dict": repr(
                    {
                        "crop_raw": list(CHANNELS),
                        "crop_seg": [
                            "dna_segmentation",
                            "membrane_segmentation",
                            "membrane_segmentation_roof",
                            "struct_segmentation",
                            "struct_segmentation_roof",
                        ],
                    }
                ),
                "roi": repr([0, n_z, 0, shape[0], 0, shape[1]]),
                "scale_micron": repr([0.108333, 0.108333, 0.108333]),
                "fov_path": f"fov_path/{fov}.ome.tiff",
                "fov_seg_path": f"fov_seg_path/{fov}_seg.ome.tiff",
                "struct_seg_path": f"struct_seg_path/{fov}_struct.ome.tiff",
                "this_cell_nbr_complete": 1,
                "this_cell_nbr_dist_2d": repr([]),
                "edge_flag": 0,
                "this_cell_index": int(rng.integers(1, 30)),
                "cell_stage": stage,
                "outlier": "Yes" if may_be_outlier and rng.random() < 0.08 else "No",
                "ChannelNumber405": 5,
                "ChannelNumber638": 3,
                "ChannelNumberBrightfield": 6,
                "ChannelNumberStruct": 1,
                "CellIndex": int(rng.integers(1, 30)),
                "PlateId": int(rng.choice([3500001234, 3500001567])),
                "WellId": int(rng.integers(1, 97)),
            }
        )
    meta = pd.DataFrame(rows, columns=list(METADATA_COLUMNS))
    write_table(raw / "metadata.csv", meta)
    log.info("demo WTC: %d cells -> %s", len(meta), raw)
    return meta
