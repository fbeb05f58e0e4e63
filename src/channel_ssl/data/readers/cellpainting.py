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
from pathlib import Path

import numpy as np
import pandas as pd

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


def data_source_of(collection: str) -> str:
    """Collection folder -> data source as CHAMMI names it (``BBBC036`` -> ``CDRP``)."""
    from channel_ssl.data.extended_chammi import CP_COLLECTION_ALIASES

    return CP_COLLECTION_ALIASES.get(collection, collection)


def read_crop(path: Path) -> np.ndarray:
    """One unfolded crop -> (5, box, box) uint8, mask tile dropped."""
    from PIL import Image

    from channel_ssl.data.readers.chammi import fold_channels

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
