"""``channel-ssl evaluate-run``: embed every source a run is probed on, and run the probes.

One process does what ``extract`` (once per source) followed by ``probe-dataset`` (once per
task) would do, so the backbone and the libraries load once per run instead of once per task:
on a small machine the start-up of a PyTorch process costs more than a demo-sized
evaluation. Its outputs are the run's score file and the feature file of every source of the
plan (:func:`step_io`); each gets the step's provenance record, whose inputs are the
checkpoint and the sources' manifests.

The plan is JSON (``--plan``): a list of sources, each
``{"manifest": path, "features": path, "probes": [[task, [column, ...]], ...]}``, optionally
with ``"protocol": {"iterations", "batch_size", "crop_size", "normalisation"}``: the paper's
augmented probe protocol for that source (``eval/augmented_probe.py``): its features are
extracted at that centre crop and normalisation, and the probes train on augmented images
through the frozen backbone. Without it, the features protocol (``--crop-size``,
self-normalisation, probes on the extracted features). A task that fills several table
columns with one measurement (JUMP-CP accuracy in tables 1 and 10) is trained once and its
value written under each name.

Output: one CSV with the ``column,value`` rows of every task (plus ``metric``, ``lr``,
``val_score``, ``task``, ``source``), the format ``render-table`` reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from channel_ssl.atomic import save_npy, write_table
from channel_ssl.data.shards import ShardStore, load_manifest
from channel_ssl.errors import UserError
from channel_ssl.eval.augmented_probe import (
    AugmentedTrainer,
    ProtocolSettings,
    centre_crop,
    channel_names,
    normalise,
)
from channel_ssl.eval.dataset_probe import probe_dataset
from channel_ssl.eval.extract import extract_features, resolve_device
from channel_ssl.eval.features import check_recipes
from channel_ssl.eval.linear_probe import add_probe_arguments, probe_config_from_args
from channel_ssl.provenance import StepIO

log = logging.getLogger("channel_ssl.evaluate_run")


def load_plan(text: str) -> list[dict]:
    """Parse and check the evaluation plan (JSON string or file)."""
    if not text.lstrip().startswith("["):
        text = Path(text).read_text()
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--plan is not valid JSON: {exc}") from exc
    if not isinstance(plan, list) or not plan:
        raise UserError("--plan must be a non-empty JSON list of sources")
    for i, item in enumerate(plan):
        missing = [k for k in ("manifest", "features", "probes") if k not in item]
        if missing:
            raise UserError(f"--plan entry {i} lacks key(s) {missing}")
        if "protocol" in item:
            try:
                item["protocol"] = ProtocolSettings(**item["protocol"])
            except TypeError as exc:
                raise UserError(
                    f"--plan entry {i}: bad protocol {item['protocol']} ({exc})"
                ) from exc
        if not item["probes"]:
            raise UserError(f"--plan entry {i} ({item['manifest']}) has no probes")
    return plan


def _features_of(backbone, family, recipe, device):
    """Recipe features of a prepared batch (the augmented protocol's frozen forward)."""
    from channel_ssl.eval.features import canonical_family, make_all_features, n_last_blocks_needed

    family = canonical_family(family)
    n_blocks = n_last_blocks_needed([recipe])
    backbone = backbone.to(device).eval()

    def features(x):
        emb = backbone.embed(x, n_last_blocks=n_blocks)
        return make_all_features(emb, [recipe], family)[recipe]

    return features


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="pretraining checkpoint (.pt)")
    parser.add_argument("--plan", required=True, help="JSON list of sources and their probes")
    parser.add_argument("--recipe", default="cls4_pool", help="feature recipe (default cls4_pool)")
    parser.add_argument("--scores-out", required=True, help="score CSV to write")
    parser.add_argument("--crop-size", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    add_probe_arguments(parser, batch_flag="--probe-batch-size")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")


def run(args: argparse.Namespace) -> int:
    from channel_ssl.train.checkpoint import load_backbone

    plan = load_plan(args.plan)
    recipe = check_recipes([args.recipe])[0]
    device = resolve_device(args.device)
    config = probe_config_from_args(args, "cpu" if device.type == "cpu" else "cuda")

    # 1. extraction, one feature file per source
    backbone, run_config = load_backbone(args.checkpoint, which="teacher")
    family = run_config["model"]["family"]
    trainers = {}
    for i, item in enumerate(plan):
        manifest = load_manifest(item["manifest"])
        store = ShardStore(Path(item["manifest"]).parent)
        protocol = item.get("protocol")
        prepare = None
        crop_size = args.crop_size
        if protocol is not None:
            crop_size = protocol.crop_size
            names = channel_names(manifest)

            def prepare(images, crop=crop_size, kind=protocol.normalisation, names=names):
                x = torch.from_numpy(np.ascontiguousarray(images)).float()
                return normalise(centre_crop(x, crop), kind, names)

            trainers[i] = AugmentedTrainer(
                _features_of(backbone, family, recipe, device), manifest, store, protocol, device
            )
        feats = extract_features(
            backbone,
            family,
            manifest,
            store,
            len(manifest),
            [recipe],
            crop_size,
            args.batch_size,
            device,
            str(item["manifest"]),
            None,
            prepare=prepare,
        )
        save_npy(item["features"], feats[recipe])
        log.info("wrote %s %s", item["features"], feats[recipe].shape)

    # 2. the probes, on those feature files
    tables = []
    for i, item in enumerate(plan):
        for task, columns in item["probes"]:
            scores = probe_dataset(
                item["features"],
                item["manifest"],
                task,
                columns[0] if columns else "",
                config,
                trainer=trainers.get(i),
            )
            scores["protocol"] = "augmented" if i in trainers else "features"
            scores.insert(0, "task", task)
            scores.insert(1, "source", os.path.basename(os.path.dirname(item["manifest"])))
            aliases = [scores.assign(column=alias) for alias in columns[1:]]
            scores = pd.concat([scores, *aliases], ignore_index=True)
            tables.append(scores)
            log.info(
                "%s: %s",
                task,
                ", ".join(
                    f"{c}={v:.1f}" for c, v in zip(scores["column"], scores["value"], strict=True)
                ),
            )
    write_table(args.scores_out, pd.concat(tables, ignore_index=True))
    return 0


def step_io(args: argparse.Namespace) -> StepIO:
    """What this step read and wrote: the score file and every source's feature file."""
    plan = load_plan(args.plan)
    return StepIO(
        inputs=[args.checkpoint, *(item["manifest"] for item in plan)],
        outputs=[args.scores_out, *(item["features"] for item in plan)],
    )
