"""WTC-11 hiPSC single-cell image dataset v1 (Viana et al. 2023; Allen Institute).

Native layout (quilt package ``aics/hipsc_single_cell_image_dataset``; docs/datasets.md section 3)::

    <raw>/metadata.csv                    one row per cell
    <raw>/crop_raw/<sha256>_raw.ome.tif    uint16 OME-TIFF (Z, C, Y, X), channels dna, membrane,
                                           structure (named in the OME metadata)

``metadata.csv`` columns used: ``CellId``, ``FOVId``, ``structure_name`` (the tagged GENE, e.g.
``TJP1``), ``crop_raw`` (path relative to ``<raw>``), ``cell_stage`` (M0, M1M2, M3, M4M5,
M6M7_complete, M6M7_single), ``outlier`` (``Yes``/``No``), ``PlateId``. Other columns of the
real file (``crop_seg``, ``name_dict``, ``roi``, ``fov_path``, ...) are written by the demo and
ignored by the reader.

Reading: cells with ``outlier == "Yes"`` are dropped (215,081 -> 214,037, the paper's total). A
bright-field channel, if a crop carries one (named ``bf``/``brightfield``), is dropped: the paper
keeps the three fluorescence channels. Each channel is **max-projected over Z**: CHAMMI's Allen
images, which the models are evaluated on, are max-z projections of these same crops (CHAMMI
paper, appendix), so pretraining sees the same kind of 2-D image; a centre slice would lose
structures (centrioles, speckles) lying off the middle plane. Channels stay in file order
(dna, membrane, structure) and are rescaled to uint8 per channel.

Manifest: ``label`` = ``cell_stage``; ``split`` = ``train``/``val``/``test``, a uniform 80/10/10
split of the non-outlier rows (``numpy.random.default_rng(0).permutation``), the paper's WTC
evaluation split; factors ``cell_id`` (= CellId = CHAMMI Allen file stem), ``fov_id``, ``gene``,
``structure`` (the tagged structure, :data:`GENE_TO_STRUCTURE`), ``cell_stage``, ``plate_id``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.errors import UserError

log = logging.getLogger("channel_ssl.wtc")

CHANNELS = ("dna", "membrane", "structure")
BRIGHTFIELD_NAMES = ("bf", "brightfield", "bright-field", "tl", "transmitted light")
STAGES = ("M0", "M1M2", "M3", "M4M5", "M6M7_complete", "M6M7_single")
SPLIT_FRACTIONS = (("train", 0.8), ("val", 0.1), ("test", 0.1))
SPLIT_SEED = 0

# Tagged gene of the 25 Allen Cell Collection lines -> structure name (as CHAMMI's ``Structure``
# and the paper's exclusions spell it). From the Allen Cell Collection catalogue (ASSUMED here:
# not cross-checked against the hackathon manifest's ``Structure`` column).
GENE_TO_STRUCTURE = {
    "AAVS1": "plasma membrane", "ACTB": "actin filaments", "ACTN1": "actin bundles",
    "ATP2A2": "sarcoplasmic reticulum", "CETN2": "centrioles", "CTNNB1": "adherens junctions",
    "DSP": "desmosomes", "FBL": "nucleolus (dense fibrillar component)", "GJA1": "gap junctions",
    "HIST1H2BJ": "histone", "LAMP1": "lysosome", "LMNB1": "nuclear envelope",
    "MYH10": "actomyosin bundles", "NPM1": "nucleolus (granular component)", "NUP153": "nuclear pores",
    "PXN": "matrix adhesions", "RAB5A": "endosomes", "SEC61B": "endoplasmic reticulum",
    "SLC25A17": "peroxisomes", "SMC1A": "cohesins", "SON": "nuclear speckles",
    "ST6GAL1": "golgi apparatus", "TJP1": "tight junctions", "TOMM20": "mitochondria",
    "TUBA1B": "microtubules",
}  # fmt: skip
METADATA_COLUMNS = (
    "CellId", "FOVId", "structure_name", "crop_raw", "crop_seg", "name_dict", "roi", "scale_micron",
    "fov_path", "fov_seg_path", "struct_seg_path", "this_cell_nbr_complete", "this_cell_nbr_dist_2d",
    "edge_flag", "this_cell_index", "cell_stage", "outlier", "ChannelNumber405", "ChannelNumber638",
    "ChannelNumberBrightfield", "ChannelNumberStruct", "CellIndex", "PlateId", "WellId",
)  # fmt: skip
REQUIRED = ("CellId", "FOVId", "structure_name", "crop_raw", "cell_stage", "outlier")


def structure_of(gene: str) -> str:
    """Tagged structure of a gene; a value that already is a structure name passes through."""
    return GENE_TO_STRUCTURE.get(str(gene).upper(), str(gene).lower())


def _ome_channel_names(tif) -> list[str] | None:
    import tifffile

    if not tif.ome_metadata:
        return None
    pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
    pixels = (pixels[0] if isinstance(pixels, list) else pixels)["Pixels"]
    channels = pixels.get("Channel")
    if channels is None:
        return None
    channels = channels if isinstance(channels, list) else [channels]
    names = [str(c.get("Name", "")) for c in channels]
    return names if all(names) else None


def read_crop(path: Path) -> tuple[np.ndarray, list[str]]:
    """A crop_raw OME-TIFF -> (max-z projection (C, Y, X) without bright-field, channel names)."""
    import tifffile

    if not path.exists():
        raise FileNotFoundError(f"WTC crop {path} does not exist")
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        volume = series.asarray()
        axes = series.axes.upper()
        names = _ome_channel_names(tif)
    if "C" not in axes and "S" in axes:
        axes = axes.replace("S", "C")
    if not set(axes) <= set("ZCYX") or "C" not in axes:
        raise UserError(f"WTC crop {path}: axes {series.axes!r}; expected Z, C, Y, X")
    if "Z" not in axes:
        volume, axes = volume[None], "Z" + axes
    volume = np.transpose(volume, [axes.index(a) for a in "ZCYX"])
    n_channels = volume.shape[1]
    if names is None or len(names) != n_channels:
        if n_channels != len(CHANNELS):
            raise UserError(
                f"WTC crop {path}: {n_channels} unnamed channels; expected {list(CHANNELS)} "
                "or OME channel names"
            )
        names = list(CHANNELS)
    keep = [i for i, n in enumerate(names) if n.strip().lower() not in BRIGHTFIELD_NAMES]
    return volume[:, keep].max(axis=0), [names[i].lower() for i in keep]


def uniform_split(n: int, seed: int = SPLIT_SEED) -> np.ndarray:
    """Split names for ``n`` rows: seeded permutation, first 80 % train, 10 % val, 10 % test."""
    order = np.random.default_rng(seed).permutation(n)
    names = np.empty(n, dtype=object)
    start = 0
    for k, (name, fraction) in enumerate(SPLIT_FRACTIONS):
        stop = n if k == len(SPLIT_FRACTIONS) - 1 else start + int(round(fraction * n))
        names[order[start:stop]] = name
        start = stop
    return names


def prepare(raw_dir, out_dir, image_size: int, shard_size: int) -> pd.DataFrame:
    """WTC native layout -> shards (n, 3, S, S) + manifest; returns the manifest."""
    from channel_ssl.data.sources import write_source

    raw = Path(raw_dir)
    path = raw / "metadata.csv"
    if not path.exists():
        raise FileNotFoundError(f"WTC metadata {path} does not exist")
    meta = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in REQUIRED if c not in meta.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}")
    outlier = meta["outlier"].str.strip().str.lower() == "yes"
    log.info("WTC: dropping %d outlier cell(s) of %d", int(outlier.sum()), len(meta))
    meta = meta[~outlier]
    splits = uniform_split(len(meta))

    def items():
        for k, (i, row) in enumerate(meta.iterrows()):
            stack, names = read_crop(raw / row["crop_raw"])
            if names != list(CHANNELS):
                raise UserError(f"{path} row {i}: crop channels {names}; expected {list(CHANNELS)}")
            if row["cell_stage"] not in STAGES:
                raise UserError(
                    f"{path} row {i}: cell_stage {row['cell_stage']!r} not in {list(STAGES)}"
                )
            fields = {
                "image_id": row["CellId"],
                # rows count the kept cells (features align with them); the metadata row
                # of the cell is kept as a factor
                "row": k,
                "channels": CHANNELS,
                "label": row["cell_stage"],
                "split": splits[k],
                "factors": {
                    "cell_id": row["CellId"],
                    "fov_id": row["FOVId"],
                    "gene": row["structure_name"],
                    "structure": structure_of(row["structure_name"]),
                    "cell_stage": row["cell_stage"],
                    "plate_id": row.get("PlateId", ""),
                    "metadata_row": int(i),
                },
            }
            yield stack, fields

    return write_source("wtc", items(), out_dir, image_size, shard_size, total=len(meta))
