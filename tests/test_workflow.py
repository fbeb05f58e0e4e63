"""The Snakemake workflow: DAGs per configuration and target, lint, and config errors."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snakemake(*args, cwd=REPO, check=True):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    block = output.split("Job stats:")[1].split("\n\n")[0]
    counts = {}
    for line in block.splitlines():
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if m:
            counts[m.group(1)] = int(m.group(2))
    return counts


@pytest.mark.slow  # a Snakemake dry run of the whole DAG: make test-e2e
def test_demo_dag_builds_every_table_and_figure(tmp_path):
    out = snakemake("-n", "--config", f"results_dir={tmp_path}/r").stdout
    counts = job_counts(out)
    assert counts["render_table"] == 12
    assert counts["render_figure"] == 2
    assert counts["pretrain"] == 24
    assert counts["demo_chammi"] == 1
    assert counts["demo_source"] == 8


@pytest.mark.slow  # a Snakemake dry run of the whole DAG: make test-e2e
def test_one_table_builds_only_what_it_needs(tmp_path):
    out = snakemake("-n", "table5", "--config", f"results_dir={tmp_path}/r").stdout
    counts = job_counts(out)
    assert counts["pretrain"] == 2
    assert counts["render_table"] == 1
    assert "linear_probe" not in counts
    assert "P-HA-L" not in out


@pytest.mark.slow  # a Snakemake dry run of the whole DAG: make test-e2e
def test_paper_dag_without_data(tmp_path):
    out = snakemake(
        "-np", "--configfile", "config/paper.yaml", "--config", f"results_dir={tmp_path}/p"
    ).stdout
    counts = job_counts(out)
    assert counts["pretrain"] == 24
    assert counts["download_chammi"] == 1
    assert counts["locate_source"] == 8
    assert counts["prepare_source"] == 11
    # pretraining asks for GPUs, sized per run by the plan (channel_ssl.plan): what the job
    # asks for is what `channel-ssl plan` prints, within the config's maxima
    from channel_ssl.config import load_config
    from channel_ssl.plan import sizing

    paper = load_config("config/paper.yaml")
    asked = {}
    job = r"rule pretrain:\n(?:    .*\n)*?    wildcards: run=(\S+)\n    resources: (.*)\n"
    for run, line in re.findall(job, out):
        res = dict(re.findall(r"(\w+)=(\d+)", line))
        asked[run] = (int(res["nodes"]), int(res["gpu"]), int(res["runtime"]))
    assert len(asked) == 24
    for run, got in asked.items():
        size = sizing(run, paper)
        assert got == (size.nodes, size.gpus, size.runtime_minutes), run
    assert all(gpus >= 8 for _, gpus, _ in asked.values())
    assert asked["P-BoC-S"][1] < asked["P-CViT-L"][1]  # ViT-S does not get ViT-L's nodes
    # every pretraining run of docs/paper.md section 1 appears once
    runs = re.findall(r"rule pretrain:\n(?:    .*\n)*?    wildcards: run=(P-[A-Za-z0-9-]+)\n", out)
    assert len(runs) == len(set(runs)) == 24
    # the non-CHAMMI probes follow the paper's protocol (appendix D.2), per source
    import json

    plans = [json.loads(m) for m in re.findall(r"--plan '(\[.*?\])'", out)]
    protocols = {
        Path(item["manifest"]).parent.name: item["protocol"] for plan in plans for item in plan
    }
    assert protocols["hpa_fov"] == {
        "iterations": 4350, "batch_size": 256, "crop_size": 384, "normalisation": "self"
    }  # fmt: skip
    assert protocols["jumpcp_5ch"]["normalisation"] == "bao_jumpcp"
    assert protocols["jumpcp_5ch"]["batch_size"] == 1024 and protocols["wtc"]["crop_size"] == 224
    assert "Made with linear probes by the paper's protocol" in out
    extract_blocks = [b for b in out.split("\n\n") if "rule extract_chammi:" in b]
    assert extract_blocks and all("gpu=1" in b for b in extract_blocks)


@pytest.mark.slow  # a Snakemake dry run of the whole DAG: make test-e2e
def test_bad_config_stops_before_any_job(tmp_path):
    proc = snakemake("-n", "--config", f"results_dir={tmp_path}/r", "seed=-3", check=False)
    assert proc.returncode != 0
    assert "seed" in proc.stderr + proc.stdout
    assert not (tmp_path / "r").exists()


def test_lint_is_clean():
    proc = snakemake("--lint")
    assert "Lints for" not in proc.stdout + proc.stderr


def test_snakefmt_is_clean():
    proc = subprocess.run(
        [str(BIN / "snakefmt"), "--check", "."], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_slurm_profile_asks_pretraining_jobs_for_the_stop_signal_allowed_by_the_plugin():
    import re

    import yaml
    from snakemake_executor_plugin_slurm.validation import get_forbidden_slurm_options

    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    extra = profile["set-resources"]["pretrain"]["slurm_extra"]
    assert extra.startswith("'") and extra.endswith("'")  # a string resource for Snakemake
    assert re.fullmatch(r"'--signal=USR1@\d+'", extra)  # job steps, not "B:" (batch shell)
    assert not any(re.search(p, extra) for p in get_forbidden_slurm_options())
    assert profile["retries"] >= 1  # a stopped job (exit 75) is resubmitted and resumes


@pytest.mark.slow  # a Snakemake dry run of the whole DAG: make test-e2e
def test_claims_target_plans_the_claims_job_on_the_tables_it_rests_on(tmp_path):
    from channel_ssl.claims import claim_tables

    counts = job_counts(snakemake("-n", "claims", "--config", f"results_dir={tmp_path}/r").stdout)
    assert counts["render_claims"] == 1
    assert counts["render_table"] == len(claim_tables()) == 12
    assert "render_figure" not in counts
    # `snakemake` with no target builds the claims table with the tables it rests on ...
    counts = job_counts(snakemake("-n", "--config", f"results_dir={tmp_path}/r").stdout)
    assert counts["render_claims"] == 1
    # ... but not when the configured targets leave some of those tables out
    out = snakemake("-n", "--config", f"results_dir={tmp_path}/r", "targets=[table5]").stdout
    assert "render_claims" not in job_counts(out)
