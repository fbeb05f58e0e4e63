"""Each command declares what it reads and writes once, in its own module (``step_io``)."""

from __future__ import annotations

import argparse
import importlib
import json

import numpy as np

from channel_ssl.audit import stale_outputs
from channel_ssl.cli import COMMANDS, declaration_of
from channel_ssl.provenance import StepIO, now, write_records

# commands that write no file needing a provenance record
UNRECORDED = {"check-config", "audit", "repair", "plan", "rehearse", "learning-check", "warm"}


def test_every_writing_command_declares_its_inputs_and_outputs():
    declared = {
        name
        for name, (module, _) in COMMANDS.items()
        if declaration_of(name, importlib.import_module(module)) is not None
    }
    assert declared == set(COMMANDS) - UNRECORDED


def test_evaluate_run_declares_its_feature_files_as_outputs(tmp_path):
    from channel_ssl.eval import evaluate_run

    plan = [
        {"manifest": f"{tmp_path}/{s}/manifest.parquet", "features": f"{tmp_path}/f/{s}.npy",
         "probes": [["task", ["column"]]]}
        for s in ("wtc", "cyclops")
    ]  # fmt: skip
    args = argparse.Namespace(checkpoint="ckpt.pt", plan=json.dumps(plan), scores_out="scores.csv")
    io = evaluate_run.step_io(args)
    assert io.outputs == ["scores.csv", f"{tmp_path}/f/wtc.npy", f"{tmp_path}/f/cyclops.npy"]
    assert io.inputs == [
        "ckpt.pt",
        f"{tmp_path}/wtc/manifest.parquet",
        f"{tmp_path}/cyclops/manifest.parquet",
    ]


def test_the_other_outputs_of_a_changed_outputs_step_are_re_made_with_it(tmp_path):
    scores, features, table = (tmp_path / n for n in ("scores.csv", "feats.npy", "table.csv"))
    scores.write_text("column,value\n")
    np.save(features, np.zeros((2, 2), np.float32))
    step = argparse.Namespace(command="evaluate-run")
    write_records("evaluate-run", [], step, StepIO(outputs=[str(scores), str(features)]), now())
    table.write_text("t\n")
    write_records("render-table", [], step, StepIO([str(scores)], [str(table)]), now())
    # the feature file changed: its step re-makes the score file, and the table uses that
    assert stale_outputs(str(tmp_path), [str(features)]) == [str(scores), str(table)]
    assert stale_outputs(str(tmp_path), [str(table)]) == []
