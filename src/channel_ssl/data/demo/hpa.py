"""Demo copies of the two HPA sources in their native layouts (:mod:`channel_ssl.data.readers.hpa`).

They contain CHAMMI's HPA cells (same ids, cell lines and localisations; FOVs named after the
CHAMMI cell's FOV) plus new cells of every demo cell line (HEK 293 included) and of the
held-out localisations, so every ExtendedCHAMMI rule has rows to remove.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.atomic import atomic_path, write_table
from channel_ssl.data.demo.chammi import (
    HPA_NOVEL_LABELS,
    HPA_TRAIN_LABELS,
    chammi_cells,
)
from channel_ssl.data.demo.draw import (
    HPA_CELL_LINE_SHAPES,
    render_hpa,
    stable_rng,
    unit_to_uint8,
)
from channel_ssl.data.extended_chammi import hpa_fov_of_cell
from channel_ssl.data.readers.hpa import (
    CELL_TYPES,
    FOV_CSVS,
    FOV_IMAGE_DIRS,
    LOCALISATIONS,
    SC_CSVS,
    SC_IMAGE_DIR,
    SINGLE_CELL_LOCALISATIONS,
)

log = logging.getLogger("channel_ssl.hpa")

# draw.render_hpa draws HPA cells as (microtubules, protein, nucleus, ER); files hold CHANNELS order
_DEMO_TO_FILE_ORDER = [2, 1, 0, 3]


def _demo_vocab():
    return tuple(HPA_CELL_LINE_SHAPES), HPA_TRAIN_LABELS + HPA_NOVEL_LABELS


def _draw_cell(seed: int, key: str, label: str, cell_line: str, size: int) -> np.ndarray:
    """One demo HPA cell (4, size, size) float in file channel order; pattern set by the label."""

    rng = stable_rng(seed, "hpa-source", key)
    return render_hpa(rng, label, cell_line, (size, size))[_DEMO_TO_FILE_ORDER]


def _write_rgba(path: Path, stack: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(np.moveaxis(stack, 0, -1))).save(tmp, format="PNG")


def _bool_columns(vocabulary, chosen) -> dict[str, str]:
    return {name: str(name in chosen) for name in vocabulary}


def _fov_image(seed: int, fov_id: str, labels: list[str], cell_line: str, size: int) -> np.ndarray:
    """A demo FOV (4, size, size) uint8: 2 x 2 jittered cells, each showing one of the labels."""

    rng = stable_rng(seed, "hpa-fov-layout", fov_id)
    tile = size // 2
    canvas = np.zeros((4, size + tile, size + tile), np.float32)
    for k in range(4):
        cy = (k // 2) * tile + int(rng.integers(0, tile // 2 + 1))
        cx = (k % 2) * tile + int(rng.integers(0, tile // 2 + 1))
        cell = _draw_cell(seed, f"{fov_id}/{k}", labels[k % len(labels)], cell_line, tile)
        region = canvas[:, cy : cy + tile, cx : cx + tile]
        np.maximum(region, cell, out=region)
    off = tile // 4
    return unit_to_uint8(canvas[:, off : off + size, off : off + size])


def make_demo_fov(raw_dir, seed: int = 0, scale: float = 1.0, chammi_root=None, n_images: int = 60,
                  image_size: int = 48) -> pd.DataFrame:  # fmt: skip
    """Write a demo HPA FOV in the S-BIAD2443 layout under ``raw_dir``; returns the metadata.

    About ``n_images * scale`` FOVs (``image_size`` px): the FOVs of 8 CHAMMI HPA Task_one cells
    (removed from ExtendedCHAMMI as H_Task1 FOVs) and 8 Train cells (kept unless another rule
    applies), then new FOVs with 1-2 localisations, some with Kaggle-style UUID ids. 80 % train.
    """

    raw = Path(raw_dir)
    cell_lines, labels = _demo_vocab()
    rng = stable_rng(seed, "hpa-fov-plan")
    n_total = max(4, round(n_images * scale))
    cells = chammi_cells("HPA", seed, chammi_root)
    n_chammi = min(8, n_total // 4)
    picked = pd.concat(
        [cells[cells["train_test_split"] == s].head(n_chammi) for s in ("Task_one", "Train")]
    )
    plan = [
        (hpa_fov_of_cell(Path(r.file_path).name.split(".")[0]), [r.Label], r.cell_type)
        for r in picked.itertuples()
    ]
    for k in range(n_total - len(plan)):
        if k % 5 == 4:
            fov_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"channel-ssl-demo-hpa-fov/{seed}/{k}"))
        else:
            fov_id = f"{70_000 + k}_{1000 + k % 97}_{'ABCDEFGH'[k % 8]}{1 + k % 12}_{1 + k % 3}"
        n_labels = 1 + int(rng.random() < 0.3)
        chosen = list(rng.choice(labels, size=n_labels, replace=False))
        plan.append((fov_id, [str(c) for c in chosen], str(rng.choice(cell_lines))))
    order = rng.permutation(len(plan))
    rows = []
    for pos in order:
        fov_id, chosen, cell_line = plan[pos]
        _write_rgba(
            raw / FOV_IMAGE_DIRS[0] / f"{fov_id}.png",
            _fov_image(seed, fov_id, chosen, cell_line, image_size),
        )
        listed = sorted(chosen, key=LOCALISATIONS.index)
        rows.append(
            {
                "file": f"/scr/hpa/Dino4Cells/data/whole_images/{fov_id}.png",
                "protein_location": repr(listed),
                "cell_type": cell_line,
                "ID": fov_id,
                **_bool_columns(LOCALISATIONS, chosen),
                **_bool_columns(CELL_TYPES, [cell_line]),
            }
        )
    meta = pd.DataFrame(rows)
    n_train = int(round(0.8 * len(meta)))
    for split, part in (("train", meta.iloc[:n_train]), ("test", meta.iloc[n_train:])):
        with atomic_path(raw / FOV_CSVS[split]) as tmp:
            part.to_csv(tmp)  # with the unnamed index column, as the public CSVs have
    log.info("demo HPA FOV: %d images -> %s", len(meta), raw)
    return meta


def make_demo_single_cell(raw_dir, seed: int = 0, scale: float = 1.0, chammi_root=None,
                          n_images: int = 100, image_size: int = 32) -> pd.DataFrame:  # fmt: skip
    """Write a demo HPA single-cell set in the Cell-DINO layout under ``raw_dir``.

    About ``n_images * scale`` masked cells (``image_size`` px): up to 10 CHAMMI HPA cells of
    each of Train, Task_one, Task_two (HEK 293) and Task_three (held-out localisations), same
    ids, then new cells (all demo cell lines and localisations). 80 % ``pretrain`` CSV.
    """

    raw = Path(raw_dir)
    cell_lines, labels = _demo_vocab()
    rng = stable_rng(seed, "hpa-sc-plan")
    n_total = max(4, round(n_images * scale))
    cells = chammi_cells("HPA", seed, chammi_root)
    per_split = min(10, n_total // 8)
    picked = pd.concat(
        [
            cells[cells["train_test_split"] == s].head(per_split)
            for s in ("Train", "Task_one", "Task_two", "Task_three")
        ]
    )
    plan = [
        (Path(r.file_path).name.split(".")[0], r.Label, r.cell_type) for r in picked.itertuples()
    ]
    for k in range(n_total - len(plan)):
        cell_id = f"{80_000 + k // 4}_{2000 + k // 4 % 89}_{'ABCDEFGH'[k // 4 % 8]}{1 + k // 4 % 12}_1_{k % 4}"
        plan.append((cell_id, str(rng.choice(labels)), str(rng.choice(cell_lines))))
    order = rng.permutation(len(plan))
    rows = []
    for pos in order:
        cell_id, label, cell_line = plan[pos]
        stack = _draw_cell(seed, cell_id, label, cell_line, image_size)
        # fixed-size masked crops: background outside the cell is zero
        mask = (stack.max(0) > 0.08).astype(np.float32)
        file = f"{SC_IMAGE_DIR}/{cell_id}.png"
        _write_rgba(raw / file, unit_to_uint8(stack * mask))
        rows.append(
            {
                "file": file,
                "ID": cell_id,
                "cell_type": cell_line,
                "protein_location": repr([label]),
                **_bool_columns(SINGLE_CELL_LOCALISATIONS, [label]),
                **_bool_columns(CELL_TYPES, [cell_line]),
            }
        )
    meta = pd.DataFrame(rows)
    n_pre = int(round(0.8 * len(meta)))
    for split, part in (("pretrain", meta.iloc[:n_pre]), ("evaluation", meta.iloc[n_pre:])):
        write_table(raw / SC_CSVS[split], part)
    log.info("demo HPA single cell: %d cells -> %s", len(meta), raw)
    return meta
