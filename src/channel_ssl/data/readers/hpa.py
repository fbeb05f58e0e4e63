"""Human Protein Atlas sources: HPA FOV (whole images) and HPA single cells.

HPA FOV, native layout (EBI BioImage Archive S-BIAD2443 as read by Cell-DINO's ``hpafov.py``;
docs/datasets.md section 1c/1d)::

    <raw>/whole_images_512_train.csv     split ``train``
    <raw>/whole_images_512_test.csv      split ``test``
    <raw>/512_whole_images/<ID>.png      one 4-channel image (RGBA PNG); ``new_512_whole_images/``
                                         and ``<stem>.tiff`` are accepted too, as the loader does

CSV columns: an unnamed index, ``file`` (path on the producer's machine; only its basename is
used), ``protein_location`` (Python list literal), ``cell_type``, ``ID``, the 28 Kaggle
localisations as lower-case boolean columns (``"True"``/``"False"``, :data:`LOCALISATIONS`
order), then the 35 cell-line boolean columns (:data:`CELL_TYPES`). Channels, in file order:
nucleus, protein, microtubules, ER (kept in that order). Manifest: ``label`` = the True
localisation columns joined by ``|`` in :data:`LOCALISATIONS` order (empty if none: such rows
are dropped only by the probe, they still serve pretraining); ``split`` = ``train``/``test``;
factors ``cell_type``, ``protein_location`` (list: the True columns plus the
``protein_location`` entries), ``fov_id`` (= ``ID``).

HPA single cell, native layout (Cell-DINO "HPAone" on S-BIAD2443; docs/datasets.md section 2)::

    <raw>/fixed_size_masked_single_cells_pretrain_20240507.csv     split ``pretrain``
    <raw>/fixed_size_masked_single_cells_evaluation_20240507.csv   split ``evaluation``
    <raw>/fixed_size_masked_single_cells_HPA/<cell id>.png         one masked cell, 4 channels

CSV columns: ``file`` (relative to ``<raw>``), ``ID`` (ASSUMED ``antibody_plate_well_site_cell``,
as CHAMMI's HPA file names), ``cell_type``, ``protein_location``, the single-cell localisation
booleans (:data:`SINGLE_CELL_LOCALISATIONS`, the Kaggle-2021 19 classes; ASSUMED) and the
cell-line booleans. Channel order and format as HPA FOV (ASSUMED). Factors ``cell_type``,
``protein_location``, ``cell_id``, ``fov_id``.

Demo copies: :mod:`channel_ssl.data.demo.hpa`.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.errors import UserError

log = logging.getLogger("channel_ssl.hpa")

# Kaggle 2019 order, lower case (docs/datasets.md section 1a; the column names of the S-BIAD2443 CSVs)
LOCALISATIONS = (
    "nucleoplasm", "nuclear membrane", "nucleoli", "nucleoli fibrillar center", "nuclear speckles",
    "nuclear bodies", "endoplasmic reticulum", "golgi apparatus", "peroxisomes", "endosomes",
    "lysosomes", "intermediate filaments", "actin filaments", "focal adhesion sites", "microtubules",
    "microtubule ends", "cytokinetic bridge", "mitotic spindle", "microtubule organizing center",
    "centrosome", "lipid droplets", "plasma membrane", "cell junctions", "mitochondria",
    "aggresome", "cytosol", "cytoplasmic bodies", "rods & rings",
)  # fmt: skip
# Kaggle 2021 single-cell classes, lower case (ASSUMED to be the single-cell CSV columns)
SINGLE_CELL_LOCALISATIONS = (
    "nucleoplasm", "nuclear membrane", "nucleoli", "nucleoli fibrillar center", "nuclear speckles",
    "nuclear bodies", "endoplasmic reticulum", "golgi apparatus", "intermediate filaments",
    "actin filaments", "microtubules", "mitotic spindle", "centrosome", "plasma membrane",
    "mitochondria", "aggresome", "cytosol", "vesicles and punctate cytosolic patterns", "negative",
)  # fmt: skip
# CELL_TYPE order of Cell-DINO hpafov.py (docs/datasets.md section 1c)
CELL_TYPES = (
    "BJ", "LHCN-M2", "RH-30", "SH-SY5Y", "U-2 OS", "ASC TERT1", "HaCaT", "A-431", "U-251 MG",
    "HEK 293", "A549", "RT4", "HeLa", "MCF7", "PC-3", "hTERT-RPE1", "SK-MEL-30", "EFO-21", "AF22",
    "HEL", "Hep G2", "HUVEC TERT2", "THP-1", "CACO-2", "JURKAT", "RPTEC TERT1", "SuSa", "REH",
    "HDLM-2", "K-562", "hTCEpi", "NB-4", "HAP1", "OE19", "SiHa",
)  # fmt: skip
CHANNELS = ("nucleus", "protein", "microtubules", "er")

FOV_CSVS = {"train": "whole_images_512_train.csv", "test": "whole_images_512_test.csv"}
FOV_IMAGE_DIRS = ("512_whole_images", "new_512_whole_images")
SC_CSVS = {
    "pretrain": "fixed_size_masked_single_cells_pretrain_20240507.csv",
    "evaluation": "fixed_size_masked_single_cells_evaluation_20240507.csv",
}
SC_IMAGE_DIR = "fixed_size_masked_single_cells_HPA"


# ---- reading -----------------------------------------------------------------------------


def parse_location_list(text: str, where: str) -> list[str]:
    """``"['nucleoli', 'nucleoplasm']"`` -> list; empty text -> []."""
    text = str(text).strip()
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise UserError(f"{where}: protein_location {text!r} is not a Python list literal") from exc
    if isinstance(value, str):
        value = [value]
    return [str(v) for v in value]


def _true_columns(row: pd.Series, vocabulary: tuple[str, ...], where: str) -> list[str]:
    out = []
    for name in vocabulary:
        if name not in row.index:
            continue
        value = str(row[name]).strip()
        if value == "True":
            out.append(name)
        elif value not in ("False", ""):
            raise UserError(f"{where}: column {name!r} has {value!r}; expected 'True' or 'False'")
    return out


def read_rgba_stack(path: Path) -> np.ndarray:
    """A 4-channel image file (PNG/TIFF, (H, W, 4) or (4, H, W)) -> (4, H, W), dtype as stored."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        image = np.asarray(tifffile.imread(path))
    else:
        from PIL import Image

        with Image.open(path) as im:
            image = np.asarray(im)
    if image.ndim == 3 and image.shape[-1] == 4:
        return np.ascontiguousarray(np.moveaxis(image, -1, 0))
    if image.ndim == 3 and image.shape[0] == 4:
        return image
    raise UserError(f"{path}: shape {image.shape} is not a 4-channel image")


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"HPA metadata {path} does not exist")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return df.drop(columns=[c for c in df.columns if c == "" or c.startswith("Unnamed")])


def _fov_image_path(raw: Path, file: str) -> Path:
    name = Path(str(file).replace("\\", "/")).name
    candidates = [raw / d / name for d in FOV_IMAGE_DIRS]
    candidates += [raw / d / (Path(name).stem + ".tiff") for d in FOV_IMAGE_DIRS]
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(
        f"HPA FOV image {name} not found under {[str(raw / d) for d in FOV_IMAGE_DIRS]}"
    )


def _records(raw: Path, csvs: dict[str, str], required: tuple[str, ...]):
    frames = []
    for split, name in csvs.items():
        path = raw / name
        if not path.exists():
            continue
        df = _read_csv(path)
        missing = [c for c in required if c not in df.columns]
        if missing:
            raise UserError(f"{path}: missing column(s) {missing}")
        df["_split"], df["_csv"] = split, str(path)
        frames.append(df)
    if not frames:
        raise FileNotFoundError(f"none of {list(csvs.values())} exists in {raw}")
    return pd.concat(frames, ignore_index=True)


def _labels_and_locations(row, vocabulary, where) -> tuple[list[str], list[str]]:
    true = _true_columns(row, vocabulary, where)
    listed = parse_location_list(row.get("protein_location", ""), where)
    locations = list(dict.fromkeys(true + [v.lower() for v in listed]))
    return true, locations


def prepare_fov(raw_dir, out_dir, image_size: int, shard_size: int) -> pd.DataFrame:
    """HPA FOV native layout -> shards (n, 4, S, S) + manifest; returns the manifest."""
    from channel_ssl.data.sources import write_source

    raw = Path(raw_dir)
    meta = _records(raw, FOV_CSVS, ("file", "ID", "cell_type"))

    def items():
        for i, row in meta.iterrows():
            where = f"{row['_csv']} row {i}"
            labels, locations = _labels_and_locations(row, LOCALISATIONS, where)
            stack = read_rgba_stack(_fov_image_path(raw, row["file"]))
            fields = {
                "image_id": row["ID"],
                "row": i,
                "channels": CHANNELS,
                "label": "|".join(labels),
                "split": row["_split"],
                "factors": {
                    "cell_type": row["cell_type"],
                    "protein_location": locations,
                    "fov_id": row["ID"],
                },
            }
            yield stack, fields

    return write_source("hpa_fov", items(), out_dir, image_size, shard_size, total=len(meta))


def prepare_single_cell(raw_dir, out_dir, image_size: int, shard_size: int) -> pd.DataFrame:
    """HPA single-cell native layout -> shards (n, 4, S, S) + manifest; returns the manifest."""
    from channel_ssl.data.extended_chammi import hpa_fov_of_cell
    from channel_ssl.data.sources import write_source

    raw = Path(raw_dir)
    meta = _records(raw, SC_CSVS, ("file", "cell_type"))

    def items():
        for i, row in meta.iterrows():
            where = f"{row['_csv']} row {i}"
            labels, locations = _labels_and_locations(row, SINGLE_CELL_LOCALISATIONS, where)
            path = raw / row["file"]
            if not path.exists():
                path = raw / SC_IMAGE_DIR / Path(row["file"]).name
            if not path.exists():
                raise FileNotFoundError(
                    f"HPA single-cell image {row['file']} ({where}) does not exist"
                )
            cell_id = row["ID"] if row.get("ID", "") else Path(row["file"]).stem
            fields = {
                "image_id": cell_id,
                "row": i,
                "channels": CHANNELS,
                "label": "|".join(labels),
                "split": row["_split"],
                "factors": {
                    "cell_type": row["cell_type"],
                    "protein_location": locations,
                    "cell_id": cell_id,
                    "fov_id": hpa_fov_of_cell(cell_id),
                },
            }
            yield read_rgba_stack(path), fields

    return write_source(
        "hpa_single_cell", items(), out_dir, image_size, shard_size, total=len(meta)
    )


__all__ = [
    "CELL_TYPES",
    "CHANNELS",
    "LOCALISATIONS",
    "SINGLE_CELL_LOCALISATIONS",
    "prepare_fov",
    "prepare_single_cell",
]
