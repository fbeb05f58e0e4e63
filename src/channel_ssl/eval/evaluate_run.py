"""``channel-ssl evaluate-run``: embed every source a run is probed on, and run the probes.

One process does what ``extract`` (once per source) followed by ``probe-dataset`` (once per
task) would do, so the backbone and the libraries load once per run instead of once per task:
on a small machine the start-up of a PyTorch process costs more than a demo-sized
evaluation. The lineage is unchanged: each feature file gets the record of an ``extract``
step, and the run's score file the record of a ``probe-dataset`` step whose inputs are
those feature files.

The plan is JSON (``--plan``): a list of sources, each
``{"manifest": path, "features": path, "probes": [[task, [column, ...]], ...]}``. A task
that fills several table columns with one measurement (JUMP-CP accuracy in tables 1 and 10)
is trained once and its value written under each name.

Output: one CSV with the ``column,value`` rows of every task (plus ``metric``, ``lr``,
``val_score``, ``task``, ``source``), the format ``render-table`` reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from channel_ssl.atomic import save_npy, write_table
from channel_ssl.data.shards import ShardStore, load_manifest
from channel_ssl.errors import UserError
from channel_ssl.eval.dataset_probe import probe_dataset
from channel_ssl.eval.extract import extract_features, resolve_device
from channel_ssl.eval.features import check_recipes
from channel_ssl.eval.linear_probe import add_probe_arguments, probe_config_from_args
from channel_ssl.provenance import StepIO, now, write_records

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
        if not item["probes"]:
            raise UserError(f"--plan entry {i} ({item['manifest']}) has no probes")
    return plan


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
    argv = sys.argv[1:]
    device = resolve_device(args.device)
    config = probe_config_from_args(args, "cpu" if device.type == "cpu" else "cuda")

    # 1. extraction, one "extract" step per source
    backbone, run_config = load_backbone(args.checkpoint, which="teacher")
    family = run_config["model"]["family"]
    for item in plan:
        start = now()
        manifest = load_manifest(item["manifest"])
        store = ShardStore(Path(item["manifest"]).parent)
        feats = extract_features(
            backbone,
            family,
            manifest,
            store,
            len(manifest),
            [recipe],
            args.crop_size,
            args.batch_size,
            device,
            str(item["manifest"]),
            None,
        )
        save_npy(item["features"], feats[recipe])
        log.info("wrote %s %s", item["features"], feats[recipe].shape)
        params = argparse.Namespace(
            checkpoint=args.checkpoint,
            manifest=item["manifest"],
            out_dir=os.path.dirname(item["features"]),
            recipes=recipe,
            crop_size=args.crop_size,
            batch_size=args.batch_size,
            which="teacher",
        )
        write_records(
            "extract",
            argv,
            params,
            StepIO(inputs=[args.checkpoint, item["manifest"]], outputs=[item["features"]]),
            start,
        )

    # 2. the probes: one "probe-dataset" step reading those feature files
    start = now()
    tables = []
    for item in plan:
        for task, columns in item["probes"]:
            scores = probe_dataset(
                item["features"], item["manifest"], task, columns[0] if columns else "", config
            )
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
    probe_settings = {k: v for k, v in asdict(config).items() if k != "device"}
    params = argparse.Namespace(plan=plan, **probe_settings)
    inputs = [i["features"] for i in plan] + [i["manifest"] for i in plan]
    write_records(
        "probe-dataset", argv, params, StepIO(inputs=inputs, outputs=[args.scores_out]), start
    )
    return 0
