"""METER-ML (Zhu et al. 2022) multi-sensor methane-source imagery: reader and demo copy.

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
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from channel_ssl.atomic import atomic_path, save_npy, write_text
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


# --------------------------------------------------------------------------- demo copy

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
