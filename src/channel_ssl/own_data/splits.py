"""The train/val/test split of ``import-images``: the table's own spellings, seeded random
(stratified) and by group (every group in one split)."""

from __future__ import annotations

import logging

import numpy as np

from channel_ssl.errors import UserError

log = logging.getLogger("channel_ssl.own_data.import")

SPLITS = ("train", "val", "test")
SPLIT_SPELLINGS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def _carve(
    rows: np.ndarray, strata: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, carved) rows, ``fraction`` of them carved, stratified when every stratum allows."""
    from sklearn.model_selection import train_test_split

    if fraction <= 0 or len(rows) < 2:
        return rows, rows[:0]
    try:
        return train_test_split(rows, test_size=fraction, random_state=seed, stratify=strata)
    except ValueError as exc:
        log.warning("stratified split impossible (%s); drawing it unstratified", exc)
        return train_test_split(rows, test_size=fraction, random_state=seed)


def random_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> np.ndarray:
    """``(n,)`` split names, stratified by ``labels`` (seeded)."""
    labels = np.asarray(labels).astype(str)
    rows = np.arange(len(labels))
    rest, test = _carve(rows, labels, test_fraction, seed)
    val_share = val_fraction / (1 - test_fraction) if test_fraction < 1 else 0.0
    train, val = _carve(rest, labels[rest], val_share, seed)
    out = np.empty(len(labels), dtype=object)
    out[train], out[val], out[test] = "train", "val", "test"
    return out


def group_split(
    groups: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> np.ndarray:
    """``(n,)`` split names with every group in one split (module docstring)."""
    groups = np.asarray(groups).astype(str)
    names, counts = np.unique(groups, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(names))
    n = len(groups)
    assigned: dict[str, str] = {}
    filled = {"test": 0, "val": 0}
    targets = {"test": test_fraction * n, "val": val_fraction * n}
    for i in order:
        target = next((s for s in ("test", "val") if filled[s] < targets[s]), "train")
        assigned[names[i]] = target
        if target != "train":
            filled[target] += counts[i]
    split = np.array([assigned[g] for g in groups], dtype=object)
    if not (split == "train").any():
        raise UserError(
            f"--split group: {len(names)} group(s) are too few to leave any for training "
            f"with --val-fraction {val_fraction} and --test-fraction {test_fraction}"
        )
    return split
