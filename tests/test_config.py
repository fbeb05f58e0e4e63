"""Configuration: defaults, validation errors that name the key, and the three shipped configs."""

from pathlib import Path

import pytest

from channel_ssl import registry
from channel_ssl.cli import main
from channel_ssl.config import load_config, validate_config
from channel_ssl.errors import UserError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


@pytest.mark.parametrize("name", ["demo", "smoke", "paper"])
def test_shipped_configs_validate(name):
    cfg = load_config(CONFIG_DIR / f"{name}.yaml")
    assert cfg["scale"] == name
    # every run of the registry resolves to a complete run configuration
    for run in registry.RUNS:
        rc = registry.run_config(run, cfg)
        assert rc["model"]["arch"] in ("nano", "micro", "vit_small", "vit_large")


def test_defaults_are_the_paper_recipe():
    cfg = validate_config({})
    p = cfg["pretrain"]
    assert (p["drop_path"], p["teacher_momentum"], p["lr"], p["iterations"], p["batch_size"]) == (
        0.1,
        0.996,
        5e-4,
        45000,
        1024,
    )
    assert cfg["linear_probe"]["n_classifiers"] == 14
    assert (cfg["linear_probe"]["lr_min"], cfg["linear_probe"]["lr_max"]) == (1e-4, 1.0)


def test_paper_config_is_paper_scale():
    cfg = load_config(CONFIG_DIR / "paper.yaml")
    assert cfg["architectures"] == {"L": "vit_large", "S": "vit_small"}
    assert cfg["pretrain"]["global_crops_size"] == 224
    assert cfg["pretrain"]["local_crops_number"] == 8
    assert cfg["resources"]["pretrain"]["gpus_per_node"] > 0


def test_unknown_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain:\n  iteratoins: 10\n")
    with pytest.raises(UserError, match=r"iteratoins") as err:
        load_config(bad)
    assert "pretrain" in str(err.value) and str(bad) in str(err.value)


def test_bad_value_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("linear_probe:\n  n_classifiers: 0\n")
    with pytest.raises(UserError, match=r"linear_probe\.n_classifiers"):
        load_config(bad)


def test_check_config_command(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("chammi:\n  source: ftp\n")
    assert main(["check-config", str(bad)]) == 2
    assert "chammi.source" in capsys.readouterr().err
    assert main(["check-config", str(CONFIG_DIR / "demo.yaml")]) == 0


def test_registry_tables_need_registered_runs():
    for t in registry.TABLES.values():
        for row in t.all_rows:
            assert row.run in registry.RUNS or row.run in registry.REFERENCE_RUNS
            if row.protocol == "probe":
                assert row.probes and all(p in registry.PROBES for p in row.probes)
            else:
                assert row.recipe in registry.CHAMMI_RECIPES
    for r in registry.RUNS.values():
        assert r.corpus in registry.CORPORA and not r.random_init
    for c in registry.CORPORA.values():
        assert all(s == "chammi" or s in registry.SOURCES for s in c.sources)
    assert registry.runs_for_targets(["table5"]) == ["P-BoC-L", "P-CViT-L", "R-RandomInit-BoC-L"]
    assert registry.runs_for_targets(["figure4"]) == ["P-CViT-L-HPAFOV"]
    with pytest.raises(KeyError, match="unknown table"):
        registry.table("table99")


def test_registry_has_the_papers_24_runs():
    assert len(registry.RUNS) == 24
    assert set(registry.runs_for_targets(registry.TARGETS)) == {
        *registry.RUNS,
        *registry.REFERENCE_RUNS,
    }
    fixed = {r.name: r for r in registry.RUNS.values() if r.family == "fixed"}
    assert {r.in_chans for r in fixed.values()} == {3, 4, 5}
    assert fixed["P-Fixed-WTC"].objective == "dinov1"
    assert registry.run("P-MAE-BoC-L").objective == "mae"
    cfg = validate_config({})
    assert registry.run_config("P-Fixed-HPAFOV", cfg)["model"]["in_chans"] == 4
    # table 3's JUMP-CP runs train on the five fluorescence channels
    assert registry.run_config("P-CViT-L-JUMP", cfg)["model"]["k_max"] == 5
    for name in ("P-CViT-L-JUMP", "P-HA-L-JUMP", "P-BoC-L-JUMP"):
        corpus = registry.CORPORA[registry.run(name).corpus]
        assert corpus.sources == ("jumpcp_5ch",), name
    assert registry.run_config("P-MAE-BoC-L", cfg)["mae"]["mask_ratio"] == 0.75


# --------------------------------------------------------------- unknown keys, one line each
def test_unknown_keys_are_listed_one_per_line_with_the_closest_key(tmp_path):
    from channel_ssl.config import unknown_keys

    config = {"seeed": 1, "pretrain": {"lrr": 0.1, "mae": {"mask_ratoi": 0.5}}, "lr": 3}
    assert unknown_keys(config) == [
        "unknown key 'seeed': did you mean 'seed'?",
        "unknown key 'pretrain.lrr': did you mean 'pretrain.lr'?",
        "unknown key 'pretrain.mae.mask_ratoi': did you mean 'pretrain.mae.mask_ratio'?",
        "unknown key 'lr': did you mean 'pretrain.lr'?",  # the right key in the wrong section
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain:\n  lrr: 0.1\nzzzz: 1\n")
    with pytest.raises(UserError) as err:
        load_config(bad)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{bad}: unknown configuration key(s):"
    assert lines[1] == "  unknown key 'pretrain.lrr': did you mean 'pretrain.lr'?"
    assert lines[2].startswith("  unknown key 'zzzz': valid keys at the top level: ")
    assert "pretrain" in lines[2] and len(lines) == 3


def test_unknown_keys_under_patterns_and_free_mappings():
    from channel_ssl.config import unknown_keys

    config = {
        "sources": {"raw_dirs": {"any_source_name": "/data"}},  # a free mapping: any key
        "learning": {"overrides": {"boc": {"iters": 5}, "vit": {}}},
    }
    assert unknown_keys(config) == [
        "unknown key 'learning.overrides.boc.iters': did you mean "
        "'learning.overrides.boc.iterations'?",
        "unknown key 'learning.overrides.vit': valid keys here: "
        "keys matching ^(boc|cvit|ha|mae|fixed)$",
    ]
    import yaml

    for name in ("demo", "smoke", "paper"):
        assert unknown_keys(yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())) == []


def test_snakemake_reports_unknown_keys_in_a_few_lines(tmp_path):
    import os
    import subprocess
    import sys

    repo = CONFIG_DIR.parent
    common = (repo / "workflow" / "rules" / "common.smk").read_text()
    assert common.index("check_unknown_keys(config)") < common.index("validate(config")
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"results_dir: {tmp_path}/r\npretrain:\n  lrr: 0.1\n")
    bin_dir = os.path.dirname(sys.executable)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--configfile", str(bad)],
        cwd=repo,
        env=dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "unknown key 'pretrain.lrr': did you mean 'pretrain.lr'?" in out
    assert len(out.splitlines()) < 30  # not the schema (over a thousand lines)


def test_a_source_is_declared_once_and_the_schema_follows_the_registry():
    import importlib

    import yaml

    from channel_ssl.data.demo.sources import DEMOS
    from channel_ssl.data.sources import READERS

    repo = Path(__file__).resolve().parents[1]
    schema = yaml.safe_load((repo / "workflow" / "schemas" / "config.schema.yaml").read_text())
    raw_enum = schema["properties"]["sources"]["properties"]["raw_dirs"]["propertyNames"]["enum"]
    assert set(raw_enum) == {s.raw for s in registry.SOURCES.values()}
    assert READERS == {n: s.reader for n, s in registry.SOURCES.items()}
    for source in registry.SOURCES.values():
        assert DEMOS[source.name] == DEMOS[source.raw] == source.demo
        for target in (source.reader, source.demo):
            module, _, function = target.partition(":")
            assert callable(getattr(importlib.import_module(module), function)), target
