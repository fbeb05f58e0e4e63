"""Config 'user_datasets' and 'user_runs': your own images in the workflow (a corpus source
runs pretrain on, target evaluate_<name>), on a folder of small TIFFs made here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from channel_ssl import plan, registry, user_data
from channel_ssl.cli import main as cli_main
from channel_ssl.config import validate_config
from channel_ssl.errors import UserError
from channel_ssl.own_data.demo_images import CHANNELS, write_demo_images

REPO = Path(__file__).resolve().parents[1]
RUN = "U-BoC-cells"


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    """24 cells (3 classes x 8), 16 px, 3 channels, (C, H, W) uint16 TIFFs + labels.csv."""
    root = tmp_path_factory.mktemp("cells")
    write_demo_images(root, per_class=8, size=16, seed=0)
    return root


@pytest.fixture()
def own_registry(monkeypatch):
    """The registry's declarations as copies, so registering user runs here changes nothing else."""
    for name in ("RUNS", "CORPORA", "USER_SOURCES"):
        monkeypatch.setattr(registry, name, dict(getattr(registry, name)))
    yield
    plan.source_channels.cache_clear()


def _entry(cells: Path, **changes) -> dict:
    entry = {
        "name": "cells",
        "directory": str(cells / "images"),
        "table": str(cells / "labels.csv"),
        "channels": list(CHANNELS),
    }
    entry.update(changes)
    return entry


def _config(datasets: list[dict], runs: dict | None = None, **more) -> dict:
    return {"user_datasets": datasets, "user_runs": runs or {}, **more}


def _snakemake(tmp_path: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    """Snakemake on the smoke configuration plus ``config``, the venv not on PATH."""
    extra = tmp_path / "user.yaml"
    extra.write_text(yaml.safe_dump(config))
    cmd = [
        sys.executable, "-m", "snakemake", "--cores", "2", *args, "--configfile",
        "config/smoke.yaml", str(extra), "--config", f"results_dir={tmp_path / 'results'}",
    ]  # fmt: skip
    return subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, env=dict(os.environ, PATH="/usr/bin:/bin")
    )


def _job_counts(output: str) -> dict[str, int]:
    block = output.split("Job stats:")[1].split("\n\n")[0]
    rows = [line.split() for line in block.splitlines()[2:]]
    return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit()}


# ---------------------------------------------------------------------------- the DAG
@pytest.mark.slow  # a Snakemake dry run (about 10 s of CPU): make test-e2e
def test_dry_run_imports_pretrains_on_it_and_evaluates(cells, tmp_path):
    """evaluate_cells: the import, a user run pretrained on the imported corpus, a paper run
    given by 'pretrained', and evaluate-features for each; no CHAMMI for a corpus without it."""
    given = tmp_path / "given.pt"
    given.write_bytes(b"read only when the job runs")
    config = _config(
        [_entry(cells, columns={"group": "plate"}, evaluate={"runs": [RUN, "P-BoC-L"]})],
        {RUN: {"family": "boc", "corpus": ["cells"]}},
        pretrained={"P-BoC-L": str(given)},
    )
    proc = _snakemake(tmp_path, config, "-n", "-p", "evaluate_cells")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert _job_counts(out) == {
        "import_user_dataset": 1,
        "assemble_corpus": 1,
        "pretrain": 1,
        "use_pretrained": 1,
        "evaluate_user_dataset": 2,
        "evaluate_cells": 1,
        "total": 7,
    }
    results = tmp_path / "results"
    assert f"--out {results}/shards/cells --name cells" in out
    assert f"--channels {','.join(CHANNELS)} --group-column plate --split random" in out
    assert f"--manifest {results}/shards/cells/manifest.parquet --splits train" in out
    assert f"--corpus {results}/corpora/user-cells/corpus.parquet" in out
    for run in (RUN, "P-BoC-L"):
        assert (
            f"--checkpoint {results}/pretrain/{run}/checkpoint.pt --out {results}/user/cells/{run}"
            in out
        )


def test_register_adds_the_run_its_corpus_and_the_source(cells, own_registry):
    config = validate_config(
        _config([_entry(cells)], {RUN: {"family": "cvit", "corpus": ["cells", "wtc"]}})
    )
    datasets = user_data.register(config)
    assert datasets["cells"].runs == (RUN,)  # evaluate.runs null: the user runs on it
    run = registry.run(RUN)
    assert (run.family, run.size, run.corpus) == ("cvit", "L", "user-cells-wtc")
    corpus = registry.corpus("user-cells-wtc")
    assert corpus.sources == ("cells", "wtc") and corpus.splits == ("train",)
    assert plan.mean_channels("user-cells-wtc") == (3 + 3) / 2
    assert registry.run_config(RUN, config)["model"]["k_max"] == config["pretrain"]["k_max"]
    assert datasets["cells"].evaluation_files("r") == [
        f"r/user/cells/{RUN}/scores.csv",
        f"r/user/cells/{RUN}/report.md",
    ]
    user_data.register(config)  # the workflow may read its config again: same declarations
    with pytest.raises(ValueError, match="clashes"):
        registry.add_user_data({"wtc": ("a",)}, {}, {})


# ----------------------------------------------------------------------- bad configs
def _dup(cells):
    return _config([_entry(cells), _entry(cells)])


BAD = {
    "unknown column": (
        lambda c: _config([_entry(c, columns={"label": ["label", "nope"]})]),
        r"user_datasets\[0\].columns.label: table .*labels.csv has no column 'nope'; its columns "
        "are: 'path', 'label', 'plate'",
    ),
    "missing table": (
        lambda c: _config([_entry(c, table=str(c / "absent.csv"))]),
        r"user_datasets\[0\].table: .*absent.csv does not exist",
    ),
    "missing folder": (
        lambda c: _config([_entry(c, directory=str(c / "absent"))]),
        r"user_datasets\[0\].directory: .*absent is not a directory",
    ),
    "duplicate name": (
        _dup,
        r"user_datasets\[1\].name: 'cells' is already the name of user_datasets\[0\]",
    ),
    "paper source's name": (
        lambda c: _config([_entry(c, name="hpa_fov")]),
        r"user_datasets\[0\].name: 'hpa_fov' is the name of a paper source",
    ),
    "corpus source unknown": (
        lambda c: _config([_entry(c)], {RUN: {"family": "boc", "corpus": ["cels"]}}),
        rf"user_runs.{RUN}.corpus: unknown source 'cels'; a corpus lists user datasets \(cells\)",
    ),
    "run named like a paper run": (
        lambda c: _config([_entry(c)], {"P-BoC-L": {"family": "boc", "corpus": ["cells"]}}),
        "user_runs.P-BoC-L: 'P-BoC-L' is the name of a registry run",
    ),
    "run to evaluate unknown": (
        lambda c: _config([_entry(c, evaluate={"runs": ["P-BoC-XL"]})]),
        r"user_datasets\[0\].evaluate.runs: unknown run 'P-BoC-XL'",
    ),
    "too few channel embeddings": (
        lambda c: _config([_entry(c)], {RUN: {"family": "cvit", "corpus": ["cells"], "k_max": 2}}),
        rf"user_runs.{RUN}.k_max: 2 channel embeddings, but its corpus has images of 3 channels",
    ),
    "leave-group-out without a group": (
        lambda c: _config([_entry(c, evaluate={"leave_group_out": True})]),
        r"user_datasets\[0\].evaluate.leave_group_out: needs columns.group",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_names_the_key(case, cells, own_registry):
    make, message = BAD[case]
    with pytest.raises(UserError, match=message):
        user_data.register(validate_config(make(cells)))
    assert RUN not in registry.RUNS  # nothing registered from a bad config


def test_unknown_and_invalid_keys_of_an_entry_are_named(cells):
    entry = _entry(cells)
    entry["tabel"] = entry.pop("table")
    with pytest.raises(
        UserError, match=r"'user_datasets\[0\].tabel': did you mean 'user_datasets\[0\].table'"
    ):
        validate_config(_config([entry]))
    with pytest.raises(UserError, match=r"at 'user_datasets.0.name': 'My Cells' does not match"):
        validate_config(_config([_entry(cells, name="My Cells")]))


def test_check_config_checks_user_datasets_as_the_workflow(
    cells, tmp_path, capsys, own_registry, root_logging
):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_config([_entry(cells, columns={"group": "plaate"})])))
    assert cli_main(["check-config", str(path)]) == 2
    assert "user_datasets[0].columns.group" in capsys.readouterr().err


# ------------------------------------------------------------------------ end to end
@pytest.mark.slow  # a real Snakemake build: make test-e2e
def test_evaluate_target_builds_scores_and_report_with_provenance(cells, tmp_path):
    """snakemake evaluate_cells on the smoke configuration: import-images, the random-init
    reference checkpoint, evaluate-features; scores of the model and both references."""
    from channel_ssl.provenance import read_record

    run = next(iter(registry.REFERENCE_RUNS))
    config = _config([_entry(cells, columns={"group": "plate"}, evaluate={"runs": [run]})])
    proc = _snakemake(tmp_path, config, "evaluate_cells")
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = tmp_path / "results"
    out = results / "user" / "cells" / run
    scores = pd.read_csv(out / "scores.csv")
    assert set(scores["model"]) == {
        run,
        "reference: random init",
        "reference: intensity statistics",
    }
    assert set(scores["protocol"]) == {"knn", "linear"}
    assert scores["value"].between(0, 100).all()
    assert f"run `{run}`" in (out / "report.md").read_text()
    record = read_record(out / "scores.csv")
    assert record["step"] == "evaluate-features"
    inputs = [i["path"] for i in record["inputs"]]
    assert str(results / "pretrain" / run / "checkpoint.pt") in inputs
    assert str(results / "shards" / "cells" / "manifest.parquet") in inputs
    imported = read_record(results / "shards" / "cells" / "manifest.parquet")
    assert imported["step"] == "import-images"
    assert imported["inputs"][0]["path"] == str(cells / "labels.csv")
    assert len(imported["inputs"]) == 1 + 24  # the table and every image
    assert oct((out / "scores.csv").stat().st_mode & 0o040) == oct(0o040)  # group-readable
