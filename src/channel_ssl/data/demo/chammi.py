"""Procedural demo CHAMMI, written in the real CHAMMI on-disk format.

``channel-ssl make-demo-chammi --out ROOT --seed 0 [--variant benchmark|extra] [--scale F]``
writes ``ROOT/{Allen,HPA,CP}/enriched_meta.csv`` and the unfolded images they list, exactly
as :mod:`channel_ssl.data.readers.chammi` reads the real benchmark (Allen ``.ome.tiff``, HPA and CP
``.png``, channels side by side, uint8). Everything is a function of the seed: the same seed
gives byte-identical files.

Images are small drawn cells. What a class looks like lives in one channel family, and the
factors of variation (cell line, tagged structure, plate, source) change other things, so
the tasks keep the meaning of the real ones:

Allen (WTC-11; channels nucleus, membrane, protein; label = cell-cycle stage)
    The stage sets the nucleus channel (interphase oval, condensed chromatin, metaphase
    plate, two anaphase plates, two daughter nuclei in one pinched cell or in two cells) and
    the cell outline (mitotic cells round up). The tagged ``Structure`` sets the protein
    channel only. Task_one (IID) draws from the Train structures; Task_two tags structures
    never in Train (tight junctions, centrioles, actin bundles), so the protein channel is
    new while the label still lives in the nucleus channel.
HPA (channels microtubules, protein, nucleus, ER; label = protein localisation)
    The localisation sets the protein-channel pattern (Golgi blob beside the nucleus,
    filaments, mitochondrial dots, nuclear speckles; held out: diffuse cytosol, reticular ER,
    nucleoplasm fill). The cell line sets cell and nucleus size, elongation, filament density
    and stain strengths. Task_one is IID; Task_two is the unseen cell line ``HEK 293`` (small
    round cells, large nucleus, dim microtubules and ER) with the Train labels; Task_three has
    the three labels never in Train, on the Train cell lines, every cell line carrying every
    label so the leave-one-cell-line-out evaluation works.
CP (Cell Painting; channels DNA, ER, RNA, AGP, mito; label = compound)
    The compound changes morphology (size, elongation, nuclear fragmentation, ER/RNA/mito
    texture, vacuoles), with weak, medium and strong effects as in CHAMMI's table. The source
    sets the cell line (LINCS A549 small round; CDRP and BBBC022 U2OS larger, elongated) and
    every plate adds an acquisition batch effect (per-channel gain and offset, blur, gamma,
    noise) drawn once per plate. Task_one is IID over the Train plates; Task_two uses three
    unseen LINCS plates (new batch draws); Task_three is the BBBC022 source (four unseen plates
    with an extra source-wide shift); Task_four holds the three compounds never in Train on
    four Train plates, each plate carrying each compound (leave-one-plate-out).

``--variant extra`` writes the unlabelled extra pretraining images of the demo
"ExtendedCHAMMI": same layout, every row ``Train`` with an empty ``Label``, drawn only from
Train-visible factors (Train structures, cell lines, localisations, plates and compounds),
from a different random stream, by default twice the Train size.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import uuid
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.atomic import atomic_path, write_table
from channel_ssl.data.demo.draw import (
    cp_plate_acquisition,
    render_allen,
    render_cp,
    render_hpa,
    stable_rng,
    unit_to_uint8,
)
from channel_ssl.data.readers.chammi import (
    DATASETS,
    METADATA_NAME,
    TASKS,
    TRAIN_SPLIT,
    read_metadata,
    unfold_channels,
)
from channel_ssl.progress import ProgressLogger
from channel_ssl.provenance import StepIO
from channel_ssl.step_io import chammi_images, chammi_metadata

log = logging.getLogger("channel_ssl.demo_chammi")

VARIANTS = ("benchmark", "extra")

# ---- vocabularies (docs/paper.md section 3) -------------------------------------------------------

ALLEN_STAGES = ("M0", "M1M2", "M3", "M4M5", "M6M7_complete", "M6M7_single")
ALLEN_STAGE_PROBS = (0.35, 0.14, 0.13, 0.13, 0.12, 0.13)
ALLEN_TRAIN_STRUCTURES = ("nuclear speckles", "mitochondria", "microtubules", "golgi apparatus")
ALLEN_HELDOUT_STRUCTURES = ("tight junctions", "centrioles", "actin bundles")

HPA_TRAIN_LABELS = ("golgi apparatus", "microtubules", "mitochondria", "nuclear speckles")
HPA_NOVEL_LABELS = ("cytosol", "endoplasmic reticulum", "nucleoplasm")
HPA_TRAIN_CELL_LINES = ("A-431", "U-2 OS", "HeLa", "MCF7", "RT4")
HPA_HELDOUT_CELL_LINE = "HEK 293"

CP_TRAIN_TREATMENTS = ("DMSO", "BRD-A29260609", "BRD-K04185004", "BRD-K21680192")
CP_TRAIN_TREATMENT_PROBS = (0.4, 0.2, 0.2, 0.2)
CP_NOVEL_TREATMENTS = ("BRD-K11129031", "BRD-K62310379", "BRD-K77947974")
CP_TRAIN_PLATES = (
    ("LINCS", "SQ00015116"),
    ("LINCS", "SQ00015195"),
    ("LINCS", "SQ00015129"),
    ("CDRP", "24307"),
    ("CDRP", "24308"),
)
CP_TASK_TWO_PLATES = (("LINCS", "SQ00015125"), ("LINCS", "SQ00015168"), ("LINCS", "SQ00015221"))
CP_TASK_THREE_PLATES = (
    ("BBBC022", "20589"),
    ("BBBC022", "20592"),
    ("BBBC022", "20594"),
    ("BBBC022", "20633"),
)
CP_TASK_FOUR_PLATES = (
    ("LINCS", "SQ00015129"),
    ("LINCS", "SQ00015116"),
    ("CDRP", "24307"),
    ("CDRP", "24308"),
)


@dataclass(frozen=True)
class DemoParams:
    """Everything that shapes the demo. Counts are per dataset, before ``scale``.

    Image shapes are ``(H, channel_width)`` of one channel: Allen keeps the real wide
    aspect (238 x 374), HPA and CP are square like the real crops.
    """

    seed: int = 0
    variant: str = "benchmark"
    scale: float = 1.0
    n_train: int = 240
    n_per_task: int = 60
    extra_multiplier: float = 2.0
    allen_shape: tuple[int, int] = (24, 36)
    hpa_shape: tuple[int, int] = (32, 32)
    cp_shape: tuple[int, int] = (24, 24)
    base_noise: float = 0.02
    # ids of the extra variant start here so both variants can share one directory tree
    extra_id_offset: int = 500_000
    datasets: tuple[str, ...] = field(default=DATASETS)

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        unknown = [d for d in self.datasets if d not in DATASETS]
        if unknown:
            raise ValueError(f"unknown dataset(s) {unknown}; expected some of {list(DATASETS)}")

    def split_sizes(self, dataset: str) -> dict[str, int]:
        """Number of images per split (``Train`` and the dataset's tasks)."""
        if self.variant == "extra":
            return {TRAIN_SPLIT: max(1, round(self.n_train * self.extra_multiplier * self.scale))}
        sizes = {TRAIN_SPLIT: max(1, round(self.n_train * self.scale))}
        for task in TASKS[dataset]:
            sizes[task] = max(1, round(self.n_per_task * self.scale))
        return sizes


# ---- the plan: which images, with which factors ------------------------------------------


def _cyclic(rng, n: int, groups, labels) -> list[tuple]:
    """``n`` (group, label) pairs cycling through all combinations, then shuffled.

    Used for leave-one-group-out tasks, where every group must carry every label.
    """
    combos = [(g, lab) for g in groups for lab in labels]
    pairs = [combos[i % len(combos)] for i in range(max(n, len(combos)))]
    order = rng.permutation(len(pairs))
    return [pairs[i] for i in order]


def _variant_code(params: DemoParams) -> int:
    return VARIANTS.index(params.variant)


def _plan_rng(params: DemoParams, dataset: str) -> np.random.Generator:
    return stable_rng(params.seed, "plan", _variant_code(params), dataset)


def _image_rng(params: DemoParams, dataset: str, index: int) -> np.random.Generator:
    return stable_rng(params.seed, "image", _variant_code(params), dataset, index)


def _task_flags(dataset: str, split: str) -> dict[str, bool]:
    return {task: split == task for task in TASKS[dataset]}


def plan_allen(params: DemoParams) -> list[dict]:
    rng = _plan_rng(params, "Allen")
    rows = []
    id_base = 200_000 + (params.extra_id_offset if params.variant == "extra" else 0)
    for split, n in params.split_sizes("Allen").items():
        structures = ALLEN_HELDOUT_STRUCTURES if split == "Task_two" else ALLEN_TRAIN_STRUCTURES
        for _ in range(n):
            rows.append(
                {
                    "split": split,
                    "Label": str(rng.choice(ALLEN_STAGES, p=ALLEN_STAGE_PROBS)),
                    "Structure": str(rng.choice(structures)),
                    "FOVId": int(rng.integers(10_000, 99_999)),
                    "PlateId": int(rng.choice([3500001234, 3500001567, 3500002011])),
                    "WellId": int(rng.integers(1, 97)),
                    "InstrumentId": int(rng.choice([1, 2])),
                }
            )
    order = rng.permutation(len(rows))
    out = []
    for pos, i in enumerate(order):
        r = rows[i]
        cell_id = id_base + pos
        out.append(
            {
                "file_path": f"Allen/crops/{cell_id}.ome.tiff",
                "ID": cell_id,
                "channel_width": params.allen_shape[1],
                "train_test_split": r["split"],
                **_task_flags("Allen", r["split"]),
                "Label": r["Label"],
                "Structure": r["Structure"],
                "FOVId": r["FOVId"],
                "PlateId": r["PlateId"],
                "WellId": r["WellId"],
                "InstrumentId": r["InstrumentId"],
            }
        )
    return out


def plan_hpa(params: DemoParams) -> list[dict]:
    rng = _plan_rng(params, "HPA")
    rows = []
    for split, n in params.split_sizes("HPA").items():
        if split == "Task_three":
            pairs = _cyclic(rng, n, HPA_TRAIN_CELL_LINES, HPA_NOVEL_LABELS)
        else:
            lines = (HPA_HELDOUT_CELL_LINE,) if split == "Task_two" else HPA_TRAIN_CELL_LINES
            pairs = [(str(rng.choice(lines)), str(rng.choice(HPA_TRAIN_LABELS))) for _ in range(n)]
        rows.extend({"split": split, "cell_type": c, "Label": lab} for c, lab in pairs)
    order = rng.permutation(len(rows))
    antibody_base = 10_000 + (params.extra_id_offset if params.variant == "extra" else 0)
    out = []
    for pos, i in enumerate(order):
        r = rows[i]
        well = f"{'ABCDEFGH'[pos % 8]}{1 + pos // 8 % 12}"
        cell_id = f"{antibody_base + pos}_{1 + pos % 1000}_{well}_{1 + pos % 4}_{pos % 16}"
        out.append(
            {
                "file_path": f"HPA/crops/{cell_id}.png",
                "ID": cell_id,
                "channel_width": params.hpa_shape[1],
                "train_test_split": r["split"],
                **_task_flags("HPA", r["split"]),
                "Label": r["Label"],
                "cell_type": r["cell_type"],
            }
        )
    return out


def plan_cp(params: DemoParams) -> list[dict]:
    rng = _plan_rng(params, "CP")
    rows = []
    for split, n in params.split_sizes("CP").items():
        if split == "Task_four":
            pairs = _cyclic(rng, n, CP_TASK_FOUR_PLATES, CP_NOVEL_TREATMENTS)
        else:
            plates = {"Task_two": CP_TASK_TWO_PLATES, "Task_three": CP_TASK_THREE_PLATES}.get(
                split, CP_TRAIN_PLATES
            )
            pairs = [
                (
                    plates[int(rng.integers(len(plates)))],
                    str(rng.choice(CP_TRAIN_TREATMENTS, p=CP_TRAIN_TREATMENT_PROBS)),
                )
                for _ in range(n)
            ]
        rows.extend(
            {"split": split, "source": p[0], "Plate": p[1], "Label": lab} for p, lab in pairs
        )
    order = rng.permutation(len(rows))
    all_treatments = CP_TRAIN_TREATMENTS + CP_NOVEL_TREATMENTS
    n_offset = params.extra_id_offset if params.variant == "extra" else 0
    out = []
    for pos, i in enumerate(order):
        r = rows[i]
        # one well per (plate, compound), as in a plate map
        wi = (zlib.crc32(r["Plate"].encode()) + all_treatments.index(r["Label"]) * 37) % 308
        well = f"{'BCDEFGHIJKLMNO'[wi % 14]}{2 + wi // 14:02d}"
        site = 1 + pos % 9
        y, x = rng.uniform(20, 1060, 2)
        name = (
            f"{n_offset + pos}@{x:.2f}x{y:.2f}"
            if r["source"] != "BBBC022"
            else f"{n_offset + pos}@{int(x)}x{int(y)}"
        )
        key = f"{r['source']}/{r['Plate']}/{well}/{site}/{name}"
        out.append(
            {
                "file_path": f"CP/crops/{key}.png",
                "Key": key,
                "channel_width": params.cp_shape[1],
                "train_test_split": r["split"],
                **_task_flags("CP", r["split"]),
                "Label": r["Label"],
                "Plate": r["Plate"],
                "Well": well,
                "source": r["source"],
            }
        )
    return out


# ---- writing -----------------------------------------------------------------------------


def _write_image(root: Path, file_path: str, unfolded: np.ndarray, seed: int) -> None:
    path = root / file_path
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if file_path.endswith((".tif", ".tiff")):
            import tifffile

            # a fixed UUID and creator instead of tifffile's time-based uuid1: byte-identical reruns
            ident = uuid.uuid5(uuid.NAMESPACE_URL, f"channel-ssl-demo/{seed}/{file_path}")
            tifffile.imwrite(
                tmp,
                unfolded,
                ome=True,
                metadata={"UUID": f"urn:uuid:{ident}", "Creator": "channel-ssl make-demo-chammi"},
            )
        else:
            from PIL import Image

            # Pillow writes no tIME chunk unless asked: the PNG bytes depend only on the pixels
            Image.fromarray(unfolded, mode="L").save(tmp, format="PNG")


def _render_row(params: DemoParams, dataset: str, index: int, row: dict) -> np.ndarray:
    """The (K, H, W) uint8 stack of one planned row."""
    rng = _image_rng(params, dataset, index)
    label = row["Label"]
    if dataset == "Allen":
        stack = render_allen(rng, label, row["Structure"], params.allen_shape)
    elif dataset == "HPA":
        stack = render_hpa(rng, label, row["cell_type"], params.hpa_shape)
    else:
        acq = cp_plate_acquisition(params.seed, row["source"], row["Plate"])
        stack = render_cp(rng, label, row["source"], acq, params.cp_shape)
    return unit_to_uint8(stack)


PLANNERS = {"Allen": plan_allen, "HPA": plan_hpa, "CP": plan_cp}


def generate_demo(
    out_root: str | Path, params: DemoParams = DemoParams()
) -> dict[str, pd.DataFrame]:
    """Write the demo CHAMMI under ``out_root``; returns the metadata table per dataset.

    Images are written first and ``enriched_meta.csv`` last, so a present metadata file
    means its images are complete.
    """
    root = Path(out_root)
    tables = {}
    for dataset in params.datasets:
        rows = PLANNERS[dataset](params)
        progress = ProgressLogger(len(rows), every=max(1, len(rows) // 4), unit="img", logger=log)
        t0 = time.perf_counter()
        for i, row in enumerate(rows):
            _write_image(
                root,
                row["file_path"],
                unfold_channels(_render_row(params, dataset, i, row)),
                params.seed,
            )
            progress.step(i)
        df = pd.DataFrame(rows)
        if params.variant == "extra":
            df["Label"] = ""  # unlabelled pretraining images: the drawn class stays hidden
        write_table(root / dataset / METADATA_NAME, df)
        tables[dataset] = df
        counts = df["train_test_split"].value_counts().to_dict()
        log.info("%s: %d images %s in %.1fs", dataset, len(df), counts, time.perf_counter() - t0)
    return tables


def chammi_cells(
    dataset: str, seed: int = 0, chammi_root: str | os.PathLike | None = None
) -> pd.DataFrame:
    """CHAMMI metadata rows of ``dataset`` that a demo source copy should contain.

    Read from ``chammi_root`` when given, else regenerated from the demo CHAMMI plan of ``seed``
    (default size, no images drawn), which is what ``make-demo-chammi --seed SEED`` writes.
    """
    if chammi_root is not None:
        return read_metadata(chammi_root, dataset)
    return pd.DataFrame(PLANNERS[dataset](DemoParams(seed=seed)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="CHAMMI root to write (Allen/, HPA/, CP/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default="benchmark",
        help="benchmark: Train + tasks; extra: unlabelled extra pretraining images",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every image count by this"
    )


def run(args: argparse.Namespace) -> int:
    params = DemoParams(seed=args.seed, variant=args.variant, scale=args.scale)
    log.info("demo CHAMMI %s", asdict(params))
    generate_demo(args.out, params)
    return 0


def step_io(args) -> StepIO:
    """What this step read and wrote, for its provenance record."""
    return StepIO(outputs=chammi_metadata(args.out), members=chammi_images(args.out))
