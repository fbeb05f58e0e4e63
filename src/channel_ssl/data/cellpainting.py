"""Cell Painting single cells of cpg0019-moshkov-deepprofiler (LINCS, CDRP, BBBC022, ...).

Native layout (cellpainting-gallery ``cpg0019``; DeepProfiler export; docs/datasets.md section 5)::

    <raw>/workspace_dl/metadata/sc-metadata.csv        (``<raw>/sc-metadata.csv`` also accepted)
    <raw>/training_images/<Collection>/<Image_Name>    <Image_Name> = Plate/Well/Site/Target@XxY.png

``sc-metadata.csv`` columns: ``Collection, Metadata_Plate, Metadata_Well, Metadata_Site,
Image_Name, Treatment, Treatment_Type, Control, LeaveReplicatesOut, LeaveCellsOut`` (header from
third-party loaders, UNVERIFIED). Collections are the folder names under ``training_images/``:
``LINCS``, ``BBBC036`` (= CDRP), ``BBBC022``, ``BBBC037`` (TA-ORF), ``BBBC043``.

Each crop is one uint8 PNG ``(box, box * C)``, channels side by side in column-major order
(DeepProfiler ``unfold_channels``), DNA, RNA, ER, AGP, Mito, plus a last mask tile when cell
outlines were available. The reader folds with ``channel_width = box`` (crops are square) and
drops the mask tile (6 tiles -> 5 channels).

Manifest: ``label`` = ``Treatment``; ``split`` = ``LeaveReplicatesOut`` (the export's split
field; ``all`` if absent); factors ``collection`` (folder), ``data_source`` (``BBBC036`` read as
``CDRP``, as CHAMMI names it), ``plate``, ``well``, ``site``, ``treatment``, ``control`` and
``cell_key`` = ``<data_source>/<Image_Name without .png>`` (CHAMMI's CP path below ``CP/crops/``).
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.atomic import atomic_path, write_table
from channel_ssl.errors import UserError

log = logging.getLogger("channel_ssl.cellpainting")

CHANNELS = ("dna", "rna", "er", "agp", "mito")
METADATA_COLUMNS = (
    "Collection", "Metadata_Plate", "Metadata_Well", "Metadata_Site", "Image_Name", "Treatment",
    "Treatment_Type", "Control", "LeaveReplicatesOut", "LeaveCellsOut",
)  # fmt: skip
REQUIRED = METADATA_COLUMNS[:6]
METADATA_PATHS = ("workspace_dl/metadata/sc-metadata.csv", "sc-metadata.csv")
IMAGE_ROOT = "training_images"
# data source (CHAMMI's name) -> cpg0019 collection folder
SOURCE_TO_COLLECTION = {"LINCS": "LINCS", "CDRP": "BBBC036", "BBBC022": "BBBC022"}
# demo_chammi draws CP cells as (DNA, ER, RNA, AGP, mito); cpg0019 crops hold CHANNELS order
_DEMO_TO_FILE_ORDER = [0, 2, 1, 3, 4]


def data_source_of(collection: str) -> str:
    """Collection folder -> data source as CHAMMI names it (``BBBC036`` -> ``CDRP``)."""
    from channel_ssl.data.extended_chammi import CP_COLLECTION_ALIASES

    return CP_COLLECTION_ALIASES.get(collection, collection)


def read_crop(path: Path) -> np.ndarray:
    """One unfolded crop -> (5, box, box) uint8, mask tile dropped."""
    from PIL import Image

    from channel_ssl.data.chammi import fold_channels

    if not path.exists():
        raise FileNotFoundError(f"Cell Painting crop {path} does not exist")
    with Image.open(path) as im:
        image = np.asarray(im)
    if image.ndim != 2 or image.shape[1] % image.shape[0]:
        raise UserError(f"{path}: shape {image.shape} is not (box, box * C)")
    stack = fold_channels(image, image.shape[0])
    if stack.shape[0] == len(CHANNELS) + 1:
        stack = stack[:-1]  # the cell-outline mask
    if stack.shape[0] != len(CHANNELS):
        raise UserError(
            f"{path}: {stack.shape[0]} tiles; expected {len(CHANNELS)} (+ optional mask)"
        )
    return stack


def _metadata_path(raw: Path) -> Path:
    for rel in METADATA_PATHS:
        if (raw / rel).exists():
            return raw / rel
    raise FileNotFoundError(
        f"Cell Painting metadata not found: none of {[str(raw / r) for r in METADATA_PATHS]}"
    )


def prepare(raw_dir, out_dir, image_size: int, shard_size: int) -> pd.DataFrame:
    """cpg0019 native layout -> shards (n, 5, S, S) + manifest; returns the manifest."""
    from channel_ssl.data.sources import write_source

    raw = Path(raw_dir)
    path = _metadata_path(raw)
    meta = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in REQUIRED if c not in meta.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}")

    def items():
        for i, row in meta.iterrows():
            source = data_source_of(row["Collection"])
            fields = {
                "image_id": f"{row['Collection']}/{row['Image_Name']}",
                "row": i,
                "channels": CHANNELS,
                "label": row["Treatment"],
                "split": row.get("LeaveReplicatesOut", "") or "all",
                "factors": {
                    "collection": row["Collection"],
                    "data_source": source,
                    "plate": row["Metadata_Plate"],
                    "well": row["Metadata_Well"],
                    "site": row["Metadata_Site"],
                    "treatment": row["Treatment"],
                    "control": row.get("Control", ""),
                    "cell_key": f"{source}/{row['Image_Name'].removesuffix('.png')}",
                },
            }
            yield read_crop(raw / IMAGE_ROOT / row["Collection"] / row["Image_Name"]), fields

    return write_source("cellpainting", items(), out_dir, image_size, shard_size, total=len(meta))


# ---- demo --------------------------------------------------------------------------------

DEMO_PLATES = (
    ("LINCS", "SQ00015116"), ("LINCS", "SQ00015195"), ("LINCS", "SQ00015129"),
    ("LINCS", "SQ00015125"), ("LINCS", "SQ00015168"), ("LINCS", "SQ00015221"),
    ("CDRP", "24307"), ("CDRP", "24308"), ("BBBC022", "20589"), ("BBBC022", "20633"),
)  # fmt: skip


def _crop(seed: int, key: str, treatment: str, source: str, plate: str, box: int) -> np.ndarray:
    """Demo crop (box, box * 6) uint8: five stains then the cell mask (BBBC022: no mask tile)."""
    from channel_ssl.data.chammi import unfold_channels
    from channel_ssl.data.demo_chammi import (
        _render_cp,
        _stable_rng,
        _to_uint8,
        cp_plate_acquisition,
    )

    rng = _stable_rng(seed, "cp-source", key)
    stack = _to_uint8(
        _render_cp(rng, treatment, source, cp_plate_acquisition(seed, source, plate), (box, box))
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
    from channel_ssl.data.demo_chammi import CP_NOVEL_TREATMENTS, CP_TRAIN_TREATMENTS, _stable_rng
    from channel_ssl.data.extended_chammi import chammi_cells

    raw = Path(raw_dir)
    rng = _stable_rng(seed, "cp-plan")
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
