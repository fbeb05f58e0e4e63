"""The whole workflow on the smoke configuration: tables, reruns, and auditing a number."""

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from channel_ssl.audit import audit
from channel_ssl.provenance import read_record

REPO = Path(__file__).resolve().parents[1]
# A slice of the smoke DAG that crosses every kind of step: CHAMMI 1-NN (table 5), probes on a
# non-CHAMMI source with a not-applicable cell (table 10), the ExtendedCHAMMI census (table 7).
TARGETS = ["table5", "table10", "table7"]


def snakemake(*args, check=True):
    # the venv is not on PATH: the rules must find channel-ssl by themselves (README command)
    env = dict(os.environ, PATH="/usr/bin:/bin")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    results = tmp_path_factory.mktemp("smoke") / "results"
    args = ("--configfile", "config/smoke.yaml", "--config", f"results_dir={results}")
    snakemake(*TARGETS, *args)
    return results, args


@pytest.mark.slow
def test_smoke_builds_tables_labelled_demo(smoke):
    results, _ = smoke
    for t in ["table5", "table10"]:
        md = (results / "tables" / f"{t}.md").read_text()
        assert "DEMO numbers" in md
        cells = pd.read_csv(results / "tables" / f"{t}.csv", dtype=str, keep_default_na=False)
        reproduced = cells[(cells["cited"] == "false") & (cells["reproduced"] != "x")]
        assert len(reproduced) > 0
        assert reproduced["reproduced"].astype(float).between(0, 100).all(), t
        # every reproduced cell names the score file it came from, and that file exists
        assert all(Path(f).exists() for f in reproduced["source_file"])
        assert (cells.loc[cells["cited"] == "true", "reproduced"] == "").all()
    t10 = pd.read_csv(results / "tables" / "table10.csv", dtype=str, keep_default_na=False)
    cvit8 = t10[(t10["row"] == "Channel ViT") & (t10["column"] == "JUMP-CP 8 channels")]
    assert cvit8["reproduced"].tolist() == ["x"]
    t7 = pd.read_csv(results / "tables" / "table7.csv", dtype=str, keep_default_na=False)
    kept = t7[t7["column"] == "Kept"]["reproduced"].astype(int)
    total = t7[t7["column"] == "Total"]["reproduced"].astype(int)
    assert (kept.values <= total.values).all() and kept.sum() > 0


@pytest.mark.slow
def test_second_run_has_nothing_to_do(smoke):
    _, args = smoke
    out = snakemake("-n", *TARGETS, *args).stdout
    assert "Nothing to be done" in out


def _same(a, b, where: str) -> None:
    """Checkpoint contents equal, tensors exactly (the saved global numpy and python generator
    states are left out: unseeded, they differ between any two cold runs too)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if not (where.endswith("/rng") and k in ("numpy", "python")):
                _same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}/{i}")
    else:
        assert a == b, where


@pytest.mark.slow
def test_under_warm_every_output_is_the_cold_one(smoke, tmp_path):
    """``channel-ssl warm`` (what ``make demo`` runs) changes nothing but the start-up time."""
    cold, _ = smoke
    results = tmp_path / "results"
    args = ("--configfile", "config/smoke.yaml", "--config", f"results_dir={results}")
    cli = Path(sys.executable).parent / "channel-ssl"
    done = subprocess.run(
        [str(cli), "warm", "--", sys.executable, "-m", "snakemake", "--cores", "2"]
        + [*TARGETS, *args],
        cwd=REPO,
        env=dict(os.environ, PATH="/usr/bin:/bin"),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    summary = done.stderr.strip().splitlines()[-1]
    assert summary.startswith("channel-ssl warm: ") and int(summary.split()[2]) > 10, summary
    files = sorted(p.relative_to(results) for p in results.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(cold) for p in cold.rglob("*") if p.is_file())
    compared = 0
    for rel in files:
        if rel.name.endswith((".prov.json", ".log")):  # times, hosts and process ids
            continue
        if rel.suffix == ".pt":
            _same(
                torch.load(cold / rel, weights_only=False),
                torch.load(results / rel, weights_only=False),
                str(rel),
            )
        else:
            warm_bytes = (results / rel).read_bytes()
            assert (
                warm_bytes.replace(str(results).encode(), str(cold).encode())
                == (cold / rel).read_bytes()
            ), rel
        compared += 1
    assert compared > 50


@pytest.mark.slow
def test_audit_cell_lineage_reaches_the_demo_data(smoke):
    results, _ = smoke
    buf = io.StringIO()
    status = audit("table5", str(results), "DINO BoC,WTC Task2", verify=True, out=buf)
    text = buf.getvalue()
    assert status == 0, text
    # from the number down to the data: score, features, checkpoint, ExtendedCHAMMI corpus,
    # a source's shards, its demo copy, and the demo CHAMMI it contains
    steps = [
        "[eval-chammi]",
        "[extract]",
        "[pretrain]",
        "[assemble-corpus]",
        "[prepare-source]",
        "[make-demo-source]",
        "[make-demo-chammi]",
    ]
    positions = [text.index(s) for s in steps]
    assert positions == sorted(positions)
    assert "[preprocess]" in text  # the CHAMMI shards the features were extracted from
    # the WTC column depends on the Allen features only
    assert "/Allen/cls1.npy" in text and "/HPA/cls1.npy" not in text
    assert "commit" in text and "config" in text
    # the table keeps the score file of the cell, and the records chain by hash
    table_rec = read_record(results / "tables" / "table5.csv")
    score = [i for i in table_rec["inputs"] if "P-BoC-L" in i["path"]][0]
    assert score["record_hash"] == read_record(score["path"])["record_hash"]


def _tree(results: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(results)), p.stat().st_size) for p in results.rglob("*"))


@pytest.mark.slow
def test_an_edited_output_is_never_moved_by_snakemake_and_repair_re_makes_it(smoke, tmp_path):
    results, args = smoke
    feature = results / "features" / "P-BoC-L" / "Allen" / "cls1.npy"
    original = np.load(feature)
    edited = original.copy()
    edited[0, 0] += 1.0
    np.save(feature, edited)

    buf = io.StringIO()
    assert audit("table5", str(results), "DINO BoC,WTC Task2", verify=True, out=buf) == 1
    assert f"CHANGED: {feature}" in buf.getvalue()

    # no Snakemake invocation moves, renames or deletes anything, whatever its flags
    before = _tree(results)
    for flags in (
        ["-n"],
        ["-n", "--quiet", "rules"],
        ["--dag"],
        ["--rulegraph"],
        ["--list-rules"],
        ["--detailed-summary"],
        ["--report", str(tmp_path / "report.html")],
        ["--touch"],
        ["--unlock"],
    ):
        snakemake(*TARGETS, *flags, *args)
        assert _tree(results) == before, flags
    np.testing.assert_array_equal(np.load(feature), edited)

    # the explicit repair step lists (dry run), then sets aside, and the next run re-makes
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "channel_ssl.cli",
            "repair",
            "--results-dir",
            str(results),
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"changed: {feature}" in out and _tree(results) == before
    out = subprocess.run(
        [sys.executable, "-m", "channel_ssl.cli", "repair", "--results-dir", str(results)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"set aside: {feature} -> {feature}.changed-" in out
    snakemake(*TARGETS, *args)
    buf = io.StringIO()
    assert audit("table5", str(results), "DINO BoC,WTC Task2", verify=True, out=buf) == 0, (
        buf.getvalue()
    )
    np.testing.assert_array_equal(np.load(feature), original)
    # the edited content was kept, not deleted
    kept = list(feature.parent.glob("cls1.npy.changed-*"))
    assert len(kept) == 1
    np.testing.assert_array_equal(np.load(kept[0]), edited)
