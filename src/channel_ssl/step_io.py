"""Helpers for the declarations of what each ``channel-ssl`` step reads and writes.

Every command that writes files declares its inputs and outputs once, in its own module, as
``step_io(args) -> StepIO`` next to its ``run(args)``; the CLI writes the provenance record of
each output from that declaration (``cli.declaration_of``). A module without ``step_io``
(``check-config``, ``audit``, ``plan``, ...) writes nothing that needs a record. This module
holds what those declarations share (CHAMMI's metadata and image files, manifests and their
shards); it imports no command module.
"""

from __future__ import annotations

import os

import pandas as pd

from channel_ssl.data.readers.chammi import DATASETS as CHAMMI_DATASETS
from channel_ssl.provenance import StepIO

CHAMMI_METADATA = "enriched_meta.csv"


def chammi_metadata(root: str) -> list[str]:
    return [os.path.join(root, d, CHAMMI_METADATA) for d in CHAMMI_DATASETS]


def chammi_images(root: str) -> list[str]:
    files = []
    for meta in chammi_metadata(root):
        if os.path.exists(meta):
            paths = pd.read_csv(meta, usecols=["file_path"])["file_path"]
            files.extend(os.path.join(root, p) for p in paths)
    return files


def manifest_file(path: str) -> str:
    return os.path.join(path, "manifest.parquet") if os.path.isdir(path) else path


def shards_of(manifest: str) -> list[str]:
    if not os.path.exists(manifest):
        return []
    shards = pd.read_parquet(manifest, columns=["shard"])["shard"].unique()
    return [os.path.join(os.path.dirname(manifest), s) for s in sorted(shards)]


def chammi_scores(args) -> StepIO:
    features = [os.path.join(args.features_dir, d, args.feature_file) for d in CHAMMI_DATASETS]
    return StepIO(inputs=features + chammi_metadata(args.root), outputs=[args.out])


def files_under(root: str, exclude: set[str]) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(root):
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            if path not in exclude and not name.endswith(".prov.json"):
                out.append(path)
    return sorted(out)
