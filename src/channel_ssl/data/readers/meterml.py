"""METER-ML (Zhu et al. 2022) multi-sensor methane-source imagery: reader of the native layout.

Native layout (docs/datasets.md section 8; stanfordmlgroup/USat ``usat/data/meter_dataset.py``)::

    <root>/{train,val,test}_dataset.geojson     FeatureCollection; properties Image_Folder, Type
    <root>/train_images/train_images_{1,2,3}/<name>/     (Image_Folder = "train_images/<name>")
    <root>/{val,test}_images/<name>/                     (Image_Folder = "<split>_images/<name>")
      naip.png            RGBA uint8 = R, G, B, NIR (1 m GSD, 720 x 720)
      sentinel-2-10m.npy  (72, 72, 4) uint16  R, G, B, NIR
      sentinel-2-20m.npy  (36, 36, 6) uint16  RE1..RE4, SWIR1, SWIR2
      sentinel-2-60m.npy  (12, 12, 3) uint16  coastal aerosol, water vapour, cirrus
      sentinel-1.npy      (72, 72, 2) uint16  VV, VH

``Type`` is a ``-``-joined multi-label string over :data:`CLASSES`; ``Negative`` / ``Roundabout``
mean no class. Labels are 6-way multi-hot (USat's LABEL_MAP order); the manifest ``label`` joins
the present classes with ``|`` in that order (``''`` for a negative: the image is labelled, with no
class). Splits are the dataset's own (train / val / test), rows in that order, each in its geojson's
feature order.

Band sets (one source name each, same reader and raw folder; paper table 11):
``meterml_naip`` NAIP (4 channels); ``meterml_naip_s2`` NAIP + Sentinel-2 10 m ("only the highest
resolution channels", 8); ``meterml_all`` NAIP + all Sentinel-2 + Sentinel-1 (19).

Channel-wise handling: NAIP is uint8 already. Every Sentinel band is mapped to uint8 through the
window [mean - 2 std, mean + 2 std] of USat's published per-band statistics (its SatMAE-style
normalisation), then resized (bilinear) to the NAIP grid; the stack is then made square and resized
to ``image_size`` with :func:`channel_ssl.data.preprocess.square_resize`. A folder lacking a band
file the band set needs is skipped with a warning (USat skips one such real folder); a folder
named in a geojson but absent on disk is an error.

Demo: sizes reduced to NAIP 48 px, S2-10 m and S1 12 px, S2-20 m 6 px, S2-60 m 2 px (the real
extents agree across sensors; here NAIP is coarser). Scenes are mixtures of materials (vegetation,
soil, water, roofs/metal, pit) whose layout depends on the classes present; every band is a
material-specific signature, so all sensors carry class evidence.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from channel_ssl.errors import UserError
from channel_ssl.npy import load_npy

log = logging.getLogger("channel_ssl.data.meterml")

CLASSES = (
    "CAFOs",
    "WWTreatment",
    "RefineriesAndTerminals",
    "Landfills",
    "Mines",
    "ProcessingPlants",
)
NO_CLASS = ("Negative", "Roundabout")
SPLITS = ("train", "val", "test")
TRAIN_SUBDIRS = ("train_images_1", "train_images_2", "train_images_3")

# product -> band names (USat's PRODUCT_BAND_MAP names)
PRODUCT_BANDS = {
    "naip": ("NAIP:Red", "NAIP:Green", "NAIP:Blue", "NAIP:NIR"),
    "sentinel-2-10m": ("S2:Red", "S2:Green", "S2:Blue", "S2:NIR"),
    "sentinel-2-20m": ("S2:RE1", "S2:RE2", "S2:RE3", "S2:RE4", "S2:SWIR1", "S2:SWIR2"),
    "sentinel-2-60m": ("S2:CoastAerosol", "S2:WaterVapor", "S2:Cirrus"),
    "sentinel-1": ("S1:VV", "S1:VH"),
}
# per-band (mean, std) of the raw uint16 values, USat STATS
SENTINEL_STATS = {
    "sentinel-1": ((1653.2279, 1257.8794), (290.1448, 280.2737)),
    "sentinel-2-10m": (
        (1027.2854, 1139.7004, 1195.8230, 2635.9023),
        (729.7542, 549.4569, 519.0011, 1053.8544),
    ),
    "sentinel-2-20m": (
        (1270.1216, 2233.1870, 2722.1499, 2968.0166, 2103.8994, 1304.2429),
        (666.4895, 798.9017, 1053.4434, 1164.7076, 997.3839, 861.1730),
    ),
    "sentinel-2-60m": ((1409.5294, 807.4094, 16.8547), (413.6848, 419.1820, 55.8404)),
}
BAND_SETS = {
    "meterml_naip": ("naip",),
    "meterml_naip_s2": ("naip", "sentinel-2-10m"),
    "meterml_all": ("naip", "sentinel-2-10m", "sentinel-2-20m", "sentinel-2-60m", "sentinel-1"),
}


def file_name(product: str) -> str:
    return f"{product}.png" if product == "naip" else f"{product}.npy"


def channels_of(source: str) -> tuple[str, ...]:
    """Channel names of a band-set source, in stacking order."""
    if source not in BAND_SETS:
        raise UserError(f"unknown Meter-ML band set {source!r}; expected one of {list(BAND_SETS)}")
    return tuple(b for product in BAND_SETS[source] for b in PRODUCT_BANDS[product])


def parse_type(type_string: str, where: str) -> list[str]:
    """``'CAFOs-Landfills'`` -> ``['CAFOs', 'Landfills']`` in :data:`CLASSES` order; Negative -> []."""
    names = [t.strip() for t in str(type_string).split("-") if t.strip()]
    unknown = [n for n in names if n not in CLASSES and n not in NO_CLASS]
    if unknown:
        raise UserError(f"{where}: Type {type_string!r} has unknown class(es) {unknown}")
    return [c for c in CLASSES if c in names]


def multi_hot(classes: list[str]) -> np.ndarray:
    """(6,) int8 indicator in :data:`CLASSES` order."""
    return np.array([c in classes for c in CLASSES], dtype=np.int8)


def read_split(root: Path, split: str) -> pd.DataFrame:
    """Rows of one geojson: ``split, image_folder, type, classes, folder`` (local directory)."""
    path = root / f"{split}_dataset.geojson"
    if not path.exists():
        raise FileNotFoundError(f"Meter-ML geojson {path} does not exist")
    with open(path) as fh:
        doc = json.load(fh)
    rows = []
    for i, feature in enumerate(doc.get("features", [])):
        props = feature.get("properties") or {}
        missing = [k for k in ("Image_Folder", "Type") if k not in props]
        if missing:
            raise UserError(f"{path}: feature {i} lacks properties {missing}")
        image_folder = str(props["Image_Folder"])
        rows.append(
            {
                "split": split,
                "image_folder": image_folder,
                "type": str(props["Type"]),
                "classes": parse_type(props["Type"], f"{path} feature {i}"),
                "folder": str(locate_folder(root, split, image_folder, f"{path} feature {i}")),
            }
        )
    return pd.DataFrame(rows, columns=["split", "image_folder", "type", "classes", "folder"])


def locate_folder(root: Path, split: str, image_folder: str, where: str) -> Path:
    """``Image_Folder`` -> local directory (train images live in train_images_{1,2,3})."""
    direct = root / image_folder
    if direct.is_dir():
        return direct
    name = Path(image_folder).name
    candidates = (
        [root / f"{split}_images" / sub / name for sub in TRAIN_SUBDIRS] if split == "train" else []
    )
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"{where}: image folder {image_folder!r} not found under {root}")


def sentinel_to_uint8(array: np.ndarray, product: str) -> np.ndarray:
    """(H, W, C) raw Sentinel values -> (C, H, W) uint8 through [mean - 2 std, mean + 2 std]."""
    mean, std = (np.asarray(v, np.float64) for v in SENTINEL_STATS[product])
    lo, hi = mean - 2 * std, mean + 2 * std
    scaled = (array.astype(np.float64) - lo) / (hi - lo) * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8).transpose(2, 0, 1)


def load_bands(folder: Path, products: tuple[str, ...]) -> np.ndarray:
    """(K, H_naip, W_naip) uint8: every band of ``products``, resized to the NAIP grid."""
    naip = np.asarray(Image.open(folder / file_name("naip")))
    if naip.ndim != 3 or naip.shape[2] != 4:
        raise UserError(
            f"{folder / 'naip.png'}: expected an RGBA (R,G,B,NIR) image, got shape {naip.shape}"
        )
    height, width = naip.shape[:2]
    planes = list(naip.transpose(2, 0, 1))
    for product in products:
        if product == "naip":
            continue
        array = load_npy(folder / file_name(product), f"Meter-ML {product} array")
        n_bands = len(PRODUCT_BANDS[product])
        if array.ndim != 3 or array.shape[2] != n_bands:
            raise UserError(
                f"{folder / file_name(product)}: expected (H, W, {n_bands}), got {array.shape}"
            )
        for plane in sentinel_to_uint8(array, product):
            resized = Image.fromarray(plane, mode="L").resize(
                (width, height), Image.Resampling.BILINEAR
            )
            planes.append(np.asarray(resized))
    return np.stack(planes)


def image_items(table: pd.DataFrame, source: str):
    """``(stack, fields)`` per usable folder for ``write_source``; stack (K, H_naip, W_naip) uint8.

    Folders lacking a band file of the band set are skipped with one warning listing them.
    """
    channels, products = channels_of(source), BAND_SETS[source]
    skipped, row = [], 0
    for item in table.itertuples(index=False):
        folder = Path(item.folder)
        absent = [file_name(p) for p in products if not (folder / file_name(p)).exists()]
        if absent:
            skipped.append(f"{item.image_folder} (no {', '.join(absent)})")
            continue
        fields = {
            "image_id": item.image_folder,
            "row": row,
            "channels": list(channels),
            "label": "|".join(item.classes),
            "split": item.split,
            "factors": {
                "classes": item.classes,
                "image_folder": item.image_folder,
                "type": item.type,
            },
        }
        row += 1
        yield load_bands(folder, products), fields
    if skipped:
        log.warning(
            "skipped %d folder(s) lacking band files: %s", len(skipped), "; ".join(skipped[:10])
        )


def read_table(raw_dir) -> pd.DataFrame:
    """All three geojsons, in split order (train, val, test)."""
    root = Path(raw_dir)
    return pd.concat([read_split(root, s) for s in SPLITS], ignore_index=True)


def _prepare(source: str, raw_dir, out_dir, image_size: int, shard_size: int) -> pd.DataFrame:
    from channel_ssl.data.sources import write_source

    table = read_table(raw_dir)
    return write_source(
        source, image_items(table, source), out_dir, image_size, shard_size, len(table)
    )


def prepare_naip(raw_dir, out_dir, image_size: int, shard_size: int) -> pd.DataFrame:
    """Source ``meterml_naip``: NAIP R, G, B, NIR (4 channels)."""
    return _prepare("meterml_naip", raw_dir, out_dir, image_size, shard_size)


def prepare_naip_s2(raw_dir, out_dir, image_size: int, shard_size: int) -> pd.DataFrame:
    """Source ``meterml_naip_s2``: NAIP + Sentinel-2 10 m (8 channels)."""
    return _prepare("meterml_naip_s2", raw_dir, out_dir, image_size, shard_size)


def prepare_all(raw_dir, out_dir, image_size: int, shard_size: int) -> pd.DataFrame:
    """Source ``meterml_all``: NAIP + Sentinel-2 10/20/60 m + Sentinel-1 (19 channels)."""
    return _prepare("meterml_all", raw_dir, out_dir, image_size, shard_size)
