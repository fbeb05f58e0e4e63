"""ExtendedCHAMMI assembly: exclusion rules, IID-task removal, leave-one-source-out, summary."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from channel_ssl.atomic import write_table
from channel_ssl.data.demo.chammi import PLANNERS, DemoParams
from channel_ssl.data.demo.sources import make_demo_source
from channel_ssl.data.extended_chammi import (
    CP_HELDOUT_PLATES,
    CP_HELDOUT_TREATMENTS,
    HPA_HELDOUT_LOCALISATIONS,
    RULES,
    WTC_HELDOUT_STRUCTURES,
    assemble_extended_chammi,
    chammi_iid_identities,
    summary_path,
)
from channel_ssl.data.shards import load_manifest, write_manifest
from channel_ssl.data.sources import reader_of
from channel_ssl.errors import UserError

SOURCES = ("hpa_fov", "hpa_single_cell", "wtc", "opencell", "cellpainting")
IDENTITY = {
    "hpa_fov": "fov_id",
    "hpa_single_cell": "cell_id",
    "wtc": "cell_id",
    "cellpainting": "cell_key",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A CHAMMI metadata root (seed 5) and the five demo sources cut from it, preprocessed."""
    base = tmp_path_factory.mktemp("ext")
    chammi = base / "chammi"
    for dataset, plan in PLANNERS.items():
        write_table(chammi / dataset / "enriched_meta.csv", pd.DataFrame(plan(DemoParams(seed=5))))
    manifests = {}
    for source in SOURCES:
        make_demo_source(source, base / "raw" / source, seed=5, scale=0.6, chammi_root=chammi)
        reader_of(source)(base / "raw" / source, base / "shards" / source, 8, 64)
        manifests[source] = base / "shards" / source
    corpus, summary = assemble_extended_chammi(
        manifests, base / "corpus" / "corpus.parquet", chammi_root=chammi
    )
    return {
        "base": base,
        "chammi": chammi,
        "manifests": manifests,
        "corpus": corpus,
        "summary": summary,
    }


def _factors(df):
    return [json.loads(f) for f in df["factors"]]


def _leaks(df) -> dict[str, int]:
    """Rows carrying a factor value ExtendedCHAMMI must not contain."""
    leaks = dict.fromkeys(
        ("cell line", "localisation", "structure", "plate", "source", "treatment"), 0
    )
    for f in _factors(df):
        leaks["cell line"] += f.get("cell_type") == "HEK 293"
        leaks["localisation"] += bool(
            set(f.get("protein_location", [])) & set(HPA_HELDOUT_LOCALISATIONS)
        )
        leaks["structure"] += f.get("structure") in WTC_HELDOUT_STRUCTURES
        leaks["plate"] += f.get("plate") in CP_HELDOUT_PLATES
        leaks["source"] += f.get("data_source") == "BBBC022"
        leaks["treatment"] += f.get("treatment") in CP_HELDOUT_TREATMENTS
    return leaks


def test_no_held_out_factor_leaks_into_the_corpus(world):
    every = pd.concat([load_manifest(m) for m in world["manifests"].values()], ignore_index=True)
    before = _leaks(every)
    assert all(n > 0 for n in before.values()), before  # the demo has something to remove
    assert _leaks(world["corpus"]) == dict.fromkeys(before, 0)


def test_iid_task_images_are_removed_and_train_images_kept(world):
    iid = chammi_iid_identities(world["chammi"])
    corpus = world["corpus"]
    for source, factor in IDENTITY.items():
        rows = corpus[corpus["source"] == source]
        kept = {f[factor] for f in _factors(rows)}
        present = {f[factor] for f in _factors(load_manifest(world["manifests"][source]))}
        assert present & iid[source], f"{source}: the demo holds no Task_one image"
        assert not kept & iid[source], f"{source}: CHAMMI Task_one images leaked"
        assert world["summary"]["sources"][source]["iid"]["removed"] > 0
    # CHAMMI Train cells of Train-visible factors stay (WTC Train structures are all kept)
    allen = pd.read_csv(world["chammi"] / "Allen" / "enriched_meta.csv", dtype=str)
    train_ids = set(allen.loc[allen["train_test_split"] == "Train", "ID"])
    wtc_kept = set(corpus.loc[corpus["source"] == "wtc", "image_id"])
    assert wtc_kept & train_ids


def test_summary_counts_equal_what_was_kept(world):
    corpus, summary = world["corpus"], world["summary"]
    assert (
        json.loads(summary_path(world["base"] / "corpus" / "corpus.parquet").read_text()) == summary
    )
    assert summary["total_kept"] == len(corpus)
    for source in SOURCES:
        s = summary["sources"][source]
        manifest = load_manifest(world["manifests"][source])
        assert s["total"] == len(manifest)
        assert s["kept"] == int((corpus["source"] == source).sum())
        removed = sum(d["removed"] for d in s["discarded"]) + (
            s["iid"]["removed"] if s["iid"] else 0
        )
        assert s["kept"] + removed == s["total"]
        assert s["paper"] == {"kept": RULES[source].paper[0], "total": RULES[source].paper[1]}
    opencell = summary["sources"]["opencell"]
    assert opencell["kept"] == opencell["total"] and opencell["discarded"] == []
    cp = {d["name"]: d for d in summary["sources"]["cellpainting"]["discarded"]}
    assert set(cp["plates"]["found"]) <= set(CP_HELDOUT_PLATES) and cp["plates"]["found"]
    assert cp["data source"]["found"] == ["BBBC022"]
    hpa = {d["name"]: d for d in summary["sources"]["hpa_single_cell"]["discarded"]}
    assert hpa["cell line"]["found"] == ["HEK 293"] and hpa["cell line"]["removed"] > 0
    # "found" lists exactly the held-out values present among rows that rule removed
    manifest = load_manifest(world["manifests"]["cellpainting"])
    present = {f["treatment"] for f in _factors(manifest)} & set(CP_HELDOUT_TREATMENTS)
    assert set(cp["treatments"]["found"]) <= present


def test_balanced_weights(world):
    corpus = world["corpus"]
    per_source = corpus.groupby("source")["weight"].sum()
    np.testing.assert_allclose(per_source.to_numpy(), len(corpus) / len(per_source))
    assert corpus["weight"].mean() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "name, gone",
    [
        ("wtc", {"wtc"}),
        ("cellpainting", {"cellpainting"}),
        ("hpa", {"hpa_fov", "hpa_single_cell"}),
        ("opencell", {"opencell"}),
    ],
)
def test_leave_one_source_out_removes_exactly_that_source(world, name, gone, tmp_path):
    corpus, summary = assemble_extended_chammi(
        world["manifests"], tmp_path / "c.parquet", chammi_root=world["chammi"], leave_out=[name]
    )
    assert set(corpus["source"]) == set(SOURCES) - gone
    full = world["corpus"]
    for source in set(SOURCES) - gone:
        a = full.loc[full["source"] == source, "image_id"].tolist()
        assert corpus.loc[corpus["source"] == source, "image_id"].tolist() == a
    for source in gone:
        assert summary["sources"][source]["left_out"] and summary["sources"][source]["kept"] == 0
    np.testing.assert_allclose(
        corpus.groupby("source")["weight"].sum().to_numpy(),
        len(corpus) / (len(SOURCES) - len(gone)),
    )


def test_without_chammi_root_iid_removal_is_recorded_as_not_applied(world, tmp_path):
    corpus, summary = assemble_extended_chammi(world["manifests"], tmp_path / "c.parquet")
    assert not summary["sources"]["wtc"]["iid"]["applied"]
    assert len(corpus) > len(world["corpus"])
    assert _leaks(corpus) == dict.fromkeys(_leaks(corpus), 0)  # factor rules still apply


def test_chammi_benchmark_manifest_keeps_train_split_only(tmp_path):
    rows = []
    for i, (split, structure) in enumerate(
        [
            ("Train", "mitochondria"),
            ("Task_one", "mitochondria"),
            ("Task_two", "centrioles"),
            ("Train", "tight junctions"),
        ]
    ):
        rows.append(
            {
                "source": "Allen",
                "image_id": f"Allen/crops/{i}.ome.tiff",
                "row": i,
                "channels": "a|b|c",
                "n_channels": 3,
                "height": 8,
                "width": 8,
                "label": "M0",
                "split": split,
                "tasks": "",
                "shard": "shard-00000.npy",
                "offset": i,
                "factors": json.dumps({"Structure": structure}),
            }  # fmt: skip
        )
    write_manifest(tmp_path / "allen" / "manifest.parquet", rows)
    corpus, summary = assemble_extended_chammi(
        {"Allen": tmp_path / "allen"}, tmp_path / "c.parquet"
    )
    assert corpus["image_id"].tolist() == ["Allen/crops/0.ome.tiff"]
    assert summary["sources"]["Allen"]["discarded"][0]["found"] == ["tight junctions"]


def test_cli_extended_chammi_and_bad_input(world, tmp_path):
    from channel_ssl.cli import main

    manifests = [a for s in SOURCES for a in ("--manifest", str(world["manifests"][s]))]
    out = tmp_path / "c.parquet"
    args = [
        "assemble-corpus",
        *manifests,
        "--out",
        str(out),
        "--extended-chammi",
        "--chammi-root",
        str(world["chammi"]),
    ]
    assert main(args + ["--leave-out", "hpa,opencell"]) == 0
    kept = pd.read_parquet(out)
    assert set(kept["source"]) == {"wtc", "cellpainting"}
    summary = json.loads(summary_path(out).read_text())
    assert summary["leave_out"] == ["HPA", "hpa_fov", "hpa_single_cell", "opencell"]
    assert summary["sources"]["wtc"]["kept"] == world["summary"]["sources"]["wtc"]["kept"]
    assert main(args + ["--leave-out", "hpa_sc"]) == 2
    assert main(["assemble-corpus", *manifests, "--out", str(out), "--leave-out", "wtc"]) == 2
    with pytest.raises(UserError, match="no rules for source"):
        assemble_extended_chammi({"jumpcp": world["manifests"]["wtc"]}, out)
    with pytest.raises(UserError, match="hold rows of source"):
        assemble_extended_chammi({"opencell": world["manifests"]["wtc"]}, out)
