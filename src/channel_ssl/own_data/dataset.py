"""An imported dataset as ``evaluate-features`` reads it: manifest, shards, labels, groups, splits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.data.shards import ShardStore, factors_of, load_manifest
from channel_ssl.errors import UserError
from channel_ssl.eval.extract import check_rows
from channel_ssl.own_data.import_images import read_dataset_description


@dataclass
class Dataset:
    """An imported dataset, rows ordered by manifest ``row``."""

    path: Path
    manifest: pd.DataFrame
    store: ShardStore
    channels: list[str]
    image_size: int
    labels: dict[str, np.ndarray]  # label column -> (N,) str ('' = unlabelled)
    groups: np.ndarray | None  # (N,) str
    group_column: str | None
    split: np.ndarray  # (N,) str


def load_dataset(path: str | os.PathLike, wanted_labels: list[str] | None = None) -> Dataset:
    """The manifest, shards and labels of ``path`` (module docstring); UserError if unusable."""
    path = Path(path)
    manifest = load_manifest(path).sort_values("row", kind="stable").reset_index(drop=True)
    check_rows(manifest, len(manifest), str(path / "manifest.parquet"))
    channel_sets = manifest["channels"].unique()
    sizes = manifest[["height", "width"]].drop_duplicates()
    if len(channel_sets) != 1 or len(sizes) != 1:
        raise UserError(
            f"dataset {path}: images differ in channels {list(channel_sets)[:3]} or size "
            f"({len(sizes)} sizes); evaluate-features needs one channel set and one size"
        )
    description = read_dataset_description(path) or {}
    columns = description.get("labels") or ["label"]
    group_column = description.get("group")
    factors = [factors_of(row) for _, row in manifest.iterrows()]
    if wanted_labels:
        unknown = [c for c in wanted_labels if c not in columns]
        if unknown:
            raise UserError(f"--label {unknown}: dataset {path} has label column(s) {columns}")
        columns = wanted_labels
    labels = {}
    for column in columns:
        if column == "label" and column not in factors[0]:
            labels[column] = manifest["label"].astype(str).to_numpy()
        else:
            labels[column] = np.array([str(f.get(column, "")) for f in factors])
    groups = None
    if group_column:
        groups = np.array([str(f.get(group_column, "")) for f in factors])
    return Dataset(
        path=path,
        manifest=manifest,
        store=ShardStore(path),
        channels=str(channel_sets[0]).split("|"),
        image_size=int(sizes.iloc[0]["height"]),
        labels=labels,
        groups=groups,
        group_column=group_column,
        split=manifest["split"].astype(str).to_numpy(),
    )
