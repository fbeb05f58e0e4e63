"""import-images and evaluate-features on small folders of TIFF / PNG crops made here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image

from channel_ssl.cli import main as cli_main
from channel_ssl.data.shards import ShardStore, load_manifest
from channel_ssl.errors import UserError
from channel_ssl.own_data import evaluate_features as ev
from channel_ssl.own_data.demo_images import CHANNELS, CLASSES, write_demo_images
from channel_ssl.own_data.images import ImageError, channel_axis_of
from channel_ssl.own_data.import_images import group_split, random_split
from channel_ssl.own_data.intensity import intensity_statistics
from channel_ssl.own_data.protocols import knn_folds, knn_predict, majority_vote

CHANNEL_FLAG = ",".join(CHANNELS)


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """60 cells, 3 classes x 20, 16 px, 3 channels, (C, H, W) uint16 TIFFs + labels.csv."""
    root = tmp_path_factory.mktemp("demo")
    write_demo_images(root, per_class=20, size=16, seed=0)
    return root


def _import(demo: Path, out: Path, *extra: str) -> int:
    return cli_main(
        [
            "import-images",
            "--images",
            str(demo / "images"),
            "--table",
            str(demo / "labels.csv"),
            "--out",
            str(out),
            "--channels",
            CHANNEL_FLAG,
            *extra,
        ]
    )


def _leftovers(parent: Path) -> list[str]:
    """Temporary or backup directories an import left beside its output."""
    return sorted(p.name for p in parent.iterdir() if p.name.endswith((".tmp", ".old")))


def _table(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "table.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _write_tiffs(folder: Path, n: int, shape=(3, 16, 16), seed=0) -> list[dict]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        tifffile.imwrite(
            folder / f"im{i}.tif",
            rng.integers(0, 255, shape, dtype=np.uint8),
            photometric="minisblack",
        )
        rows.append({"path": f"im{i}.tif", "label": "ab"[i % 2], "plate": f"p{i % 3}"})
    return rows


# ------------------------------------------------------------------------------ end to end
def test_import_then_evaluate_scores_model_and_both_references(demo, tmp_path, monkeypatch):
    """The two commands on 60 (C, H, W) TIFFs: every model x protocol x k x metric, in 0..100."""
    dataset, out = tmp_path / "dataset", tmp_path / "eval"
    assert _import(demo, dataset, "--group-column", "plate") == 0
    manifest = load_manifest(dataset)
    assert len(manifest) == 60 and set(manifest["split"]) == {"train", "val", "test"}
    assert manifest["channels"].unique().tolist() == ["nucleus|protein|membrane"]
    factors = json.loads(manifest["factors"].iloc[0])
    assert set(factors) == {"label", "plate", "table_line"}
    description = json.loads((dataset / "dataset.json").read_text())
    assert description["labels"] == ["label"] and description["group"] == "plate"
    assert (dataset / "manifest.parquet.prov.json").exists()
    record = json.loads((dataset / "manifest.parquet.prov.json").read_text())
    assert len(record["inputs"]) == 61  # the table and every image

    # a cheap stand-in for UMAP (the real one is tested below): the PNG is still drawn
    monkeypatch.setattr("channel_ssl.figures.umap_embedding", lambda x, seed: x[:, :2] * 1.0)
    rc = cli_main(
        [
            "evaluate-features",
            "--dataset",
            str(dataset),
            "--checkpoint",
            "random",
            "--family",
            "boc",
            "--arch",
            "micro",
            "--out",
            str(out),
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    scores = pd.read_csv(out / "scores.csv")
    assert list(scores.columns) == ev.SCORE_COLUMNS
    models = ["random-init boc micro", ev.REFERENCE_RANDOM, ev.REFERENCE_INTENSITY]
    assert sorted(scores["model"].unique()) == sorted(models)
    for model in models:
        for k in (1, 5, 10, 20):
            for metric in ("macro_f1", "accuracy"):
                hit = scores.query("model == @model and protocol == 'knn' and k == @k")
                assert (hit["metric"] == metric).sum() == 1, (model, k, metric)
        linear = scores.query("model == @model and protocol == 'linear'")
        assert sorted(linear["metric"]) == ["accuracy", "macro_f1"] and linear["k"].isna().all()
    assert scores["value"].between(0, 100).all()
    # the classes differ visibly: the intensity statistics' probe beats chance (33 %) clearly
    intensity = scores.query("model == @ev.REFERENCE_INTENSITY and protocol == 'linear'")
    assert intensity.query("metric == 'accuracy'")["value"].iloc[0] > 60
    report = (out / "report.md").read_text()
    for text in (*models, "Macro-F1 x 100", "Accuracy x 100", "most frequent training label"):
        assert text in report
    assert "nothing was trained" in report
    assert (out / "umap.png").stat().st_size > 0
    features = np.load(out / "features.npy")
    assert features.shape == (60, 3 * 64)  # BoC cls1: K x D
    assert np.load(out / "intensity_features.npy").shape == (60, 3 * 7)
    assert (out / "scores.csv.prov.json").exists()


def test_workflow_checkpoint_reference_is_its_random_init(demo, tmp_path):
    """A pretrain --random-init checkpoint: its features equal the random-init reference's
    (built from the run config the same way); leave-group-out k-NN; crop warning; UMAP skipped."""
    from channel_ssl.train.pretrain import save_random_init

    config = {
        "run": "tiny-boc",
        "seed": 3,
        "model": {"family": "boc", "arch": "micro"},
        "dino": {"n_prototypes": 32, "hidden_dim": 32, "bottleneck_dim": 16},
        "crops": {"global_crops_size": 32, "local_crops_size": 16},
    }
    checkpoint = save_random_init(config, tmp_path / "run")
    table = pd.read_csv(demo / "labels.csv").groupby("label").head(4)  # 12 images
    table.to_csv(tmp_path / "small.csv", index=False)
    dataset, out = tmp_path / "dataset", tmp_path / "eval"
    assert (
        cli_main(
            [
                "import-images",
                "--images",
                str(demo / "images"),
                "--table",
                str(tmp_path / "small.csv"),
                "--out",
                str(dataset),
                "--group-column",
                "plate",
            ]
        )
        == 0
    )
    log = tmp_path / "evaluate.log"
    rc = cli_main(
        [
            "evaluate-features",
            "--log",
            str(log),
            "--dataset",
            str(dataset),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--knn",
            "1,3",
            "--knn-leave-group-out",
            "--n-classifiers",
            "3",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    model = np.load(out / "features.npy")
    reference = np.load(out / "random_init_features.npy")
    np.testing.assert_array_equal(model, reference)
    scores = pd.read_csv(out / "scores.csv")
    assert set(scores["model"]) == {"tiny-boc", ev.REFERENCE_RANDOM, ev.REFERENCE_INTENSITY}
    assert set(scores["protocol"]) == {"knn_leave_group_out", "linear"}
    assert scores["value"].between(0, 100).all()
    text = log.read_text()
    assert (
        "WARNING channel_ssl.own_data.evaluate: crop size 16 px differs from the model's training crop 32"
        in text
    )
    assert "UMAP skipped" in text
    assert "the linear probe makes only 10 optimiser steps" in text
    assert not (out / "umap.png").exists()
    report = (out / "report.md").read_text()
    assert "WARNING: crop size 16 px differs" in report and "UMAP skipped" in report


def test_random_init_reference_matches_pretrain_random_init(tmp_path):
    """random_init_backbone(run config) == the teacher pretrain --random-init saves (Channel-ViT)."""
    from channel_ssl.train.checkpoint import load_backbone
    from channel_ssl.train.pretrain import save_random_init

    config = {
        "seed": 7,
        "model": {"family": "cvit", "arch": "nano"},
        "dino": {"n_prototypes": 16, "hidden_dim": 16, "bottleneck_dim": 8},
        "crops": {"global_crops_size": 16, "local_crops_size": 8},
    }
    saved, run_config = load_backbone(save_random_init(config, tmp_path))
    rebuilt = ev.random_init_backbone(run_config)
    for (name, a), (_, b) in zip(
        saved.state_dict().items(), rebuilt.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------------- Channel-ViT
def _cvit_model(channel_names=None) -> ev.Model:
    run_config = ev.random_run_config("cvit", "nano", 0, 16, 3)
    if channel_names is not None:
        run_config["channel_names"] = channel_names
    return ev.Model("cvit", None, "cvit", run_config, False)


def test_channel_vit_maps_channels_by_name_and_refuses_unknown_ones(demo, tmp_path, capsys):
    model = _cvit_model(["membrane", "DNA", "protein", "nucleus"])
    assert ev.channel_ids(model, ["nucleus", "protein", "membrane"]) == [3, 2, 0]
    assert ev.channel_ids(_cvit_model(), ["a", "b", "c"]) == [0, 1, 2]  # by position
    with pytest.raises(UserError, match="'ER'"):
        ev.channel_ids(model, ["nucleus", "ER"])

    # the CLI: a checkpoint whose run config names channels the dataset does not have
    run_config = ev.random_run_config("cvit", "nano", 0, 16, 3)
    run_config["channel_names"] = ["DNA", "protein", "membrane"]
    state = {"teacher": ev.random_init_backbone(run_config).state_dict(), "run_config": run_config}
    torch.save(state, tmp_path / "cvit.pt")
    table = pd.read_csv(demo / "labels.csv").head(6)
    table.to_csv(tmp_path / "six.csv", index=False)
    args = ["--images", str(demo / "images"), "--table", str(tmp_path / "six.csv")]
    assert (
        cli_main(
            ["import-images", *args, "--out", str(tmp_path / "ds"), "--channels", CHANNEL_FLAG]
        )
        == 0
    )
    capsys.readouterr()
    rc = cli_main(
        [
            "evaluate-features",
            "--dataset",
            str(tmp_path / "ds"),
            "--checkpoint",
            str(tmp_path / "cvit.pt"),
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "'nucleus'" in err and "DNA, protein, membrane" in err
    assert not (tmp_path / "eval").exists()


# ---------------------------------------------------------------------------- layouts
def test_import_hwc_tiff_side_by_side_png_and_one_file_per_channel(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (4, 3, 12, 12), dtype=np.uint8)  # (n, C, H, W)
    folder = tmp_path / "imgs"
    folder.mkdir()
    rows = []
    for i, image in enumerate(images):
        tifffile.imwrite(folder / f"hwc{i}.tif", np.moveaxis(image, 0, -1))  # (H, W, C)
        Image.fromarray(np.concatenate(list(image), axis=1)).save(folder / f"side{i}.png")
        for c, plane in enumerate(image):
            Image.fromarray(plane).save(folder / f"ch{c}_{i}.png")
        rows.append(
            {
                "path": f"hwc{i}.tif",
                "side": f"side{i}.png",
                **{f"c{c}": f"ch{c}_{i}.png" for c in range(3)},
                "label": "xy"[i % 2],
            }
        )
    table = _table(tmp_path, rows)
    layouts = {
        "hwc": [],
        "side": ["--path-column", "side", "--channel-width", "12"],
        "files": ["--path-column", "c0", "--path-column", "c1", "--path-column", "c2"],
    }
    for name, flags in layouts.items():
        out = tmp_path / name
        args = ["import-images", "--images", str(folder), "--table", str(table), "--out", str(out)]
        assert cli_main([*args, "--channels", "a,b,c", *flags]) == 0, name
        manifest = load_manifest(out).sort_values("row")
        store = ShardStore(out)
        got = np.stack(
            [
                store.get(s, int(o))
                for s, o in zip(manifest["shard"], manifest["offset"], strict=True)
            ]
        )
        np.testing.assert_array_equal(got, images, err_msg=name)


def test_channel_axis_rule():
    assert channel_axis_of((3, 64, 64), None, None) == 0
    assert channel_axis_of((64, 64, 5), None, None) == 2
    assert channel_axis_of((64, 4, 64), "YCX", None) == 1  # the TIFF's own axes win
    assert channel_axis_of((20, 64, 64), None, 0) == 0  # --channel-axis
    for shape in ((20, 64, 64), (8, 8, 8)):
        with pytest.raises(ImageError, match="--channel-axis"):
            channel_axis_of(shape, None, None)


# ----------------------------------------------------------------------------- errors
def test_missing_file_names_row_and_file_and_writes_nothing(tmp_path, capsys):
    rows = _write_tiffs(tmp_path / "imgs", 4)
    rows[2]["path"] = "gone.tif"
    table = _table(tmp_path, rows)
    out = tmp_path / "out"
    args = ["import-images", "--images", str(tmp_path / "imgs"), "--table", str(table)]
    assert cli_main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "row 3 (line 4)" in err and "gone.tif" in err and "does not exist" in err
    assert not out.exists() and _leftovers(tmp_path) == []


def test_wrong_channel_count_and_mixed_sizes(tmp_path, capsys):
    rows = _write_tiffs(tmp_path / "imgs", 4)
    tifffile.imwrite(tmp_path / "imgs" / "two.tif", np.zeros((2, 16, 16), np.uint8))
    tifffile.imwrite(
        tmp_path / "imgs" / "big.tif", np.zeros((3, 20, 20), np.uint8), photometric="minisblack"
    )
    args = ["import-images", "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "out")]

    two = _table(tmp_path, [*rows, {"path": "two.tif", "label": "a", "plate": "p0"}])
    assert cli_main([*args, "--table", str(two), "--channels", "a,b,c"]) == 2
    err = capsys.readouterr().err
    assert "row 5" in err and "two.tif" in err and "2 channel(s)" in err and "expected 3" in err

    big = _table(tmp_path, [*rows, {"path": "big.tif", "label": "a", "plate": "p0"}])
    assert cli_main([*args, "--table", str(big)]) == 2
    err = capsys.readouterr().err
    assert "big.tif" in err and "20x20 differs" in err and "--image-size" in err
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []
    assert cli_main([*args, "--table", str(big), "--image-size", "16"]) == 0
    assert len(load_manifest(tmp_path / "out")) == 5


def test_skip_bad_lists_and_skips(tmp_path):
    rows = _write_tiffs(tmp_path / "imgs", 6)
    (tmp_path / "imgs" / "junk.tif").write_bytes(b"not a tiff at all")
    tifffile.imwrite(tmp_path / "imgs" / "two.tif", np.zeros((2, 16, 16), np.uint8))
    bad = [
        {"path": "gone.tif", "label": "a", "plate": "p0"},
        {"path": "junk.tif", "label": "a", "plate": "p0"},
        {"path": "two.tif", "label": "b", "plate": "p1"},
    ]
    table = _table(tmp_path, rows[:3] + bad + rows[3:])
    out = tmp_path / "out"
    args = ["import-images", "--images", str(tmp_path / "imgs"), "--table", str(table)]
    log = tmp_path / "import.log"
    assert cli_main([*args, "--out", str(out), "--skip-bad", "--log", str(log)]) == 0
    manifest = load_manifest(out)
    assert len(manifest) == 6 and sorted(manifest["row"]) == list(range(6))
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["line"].tolist() == [5, 6, 7]
    assert skipped["path"].tolist() == ["gone.tif", "junk.tif", "two.tif"]
    assert "does not exist" in skipped["reason"][0] and "cannot read" in skipped["reason"][1]
    assert "2 channel(s)" in skipped["reason"][2]
    assert log.read_text().count("WARNING channel_ssl.own_data.import: skipped table") == 3
    assert json.loads((out / "dataset.json").read_text())["skipped"] == 3


def test_unknown_column_names_it_and_lists_the_columns(tmp_path, capsys):
    table = _table(tmp_path, _write_tiffs(tmp_path / "imgs", 2))
    args = ["import-images", "--images", str(tmp_path / "imgs"), "--table", str(table)]
    assert cli_main([*args, "--out", str(tmp_path / "out"), "--label-column", "celltype"]) == 2
    err = capsys.readouterr().err
    assert "no column 'celltype' (--label-column)" in err
    assert "'path', 'label', 'plate'" in err
    assert not (tmp_path / "out").exists()


def test_failed_reimport_keeps_the_previous_output(tmp_path, capsys):
    rows = _write_tiffs(tmp_path / "imgs", 4)
    table = _table(tmp_path, rows)
    out = tmp_path / "out"
    args = ["import-images", "--images", str(tmp_path / "imgs"), "--out", str(out)]
    assert cli_main([*args, "--table", str(table)]) == 0
    before = (out / "manifest.parquet").read_bytes()
    broken = tmp_path / "broken.csv"
    pd.DataFrame([*rows, {"path": "gone.tif", "label": "a", "plate": "p0"}]).to_csv(
        broken, index=False
    )
    assert cli_main([*args, "--table", str(broken)]) == 2
    assert (out / "manifest.parquet").read_bytes() == before
    assert _leftovers(tmp_path) == []
    # a folder that is not an import-images output is never replaced
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert cli_main([*args[:-1], str(other), "--table", str(table)]) == 2
    assert "not an output of import-images" in capsys.readouterr().err
    assert (other / "keep.txt").read_text() == "mine"


def test_split_column_and_random_needs_family(tmp_path, capsys):
    rows = _write_tiffs(tmp_path / "imgs", 4)
    for row, split in zip(rows, ["Train", "validation", "TEST", "train"], strict=True):
        row["fold"] = split
    table = _table(tmp_path, rows)
    args = ["import-images", "--images", str(tmp_path / "imgs"), "--table", str(table)]
    assert cli_main([*args, "--out", str(tmp_path / "ds"), "--split-column", "fold"]) == 0
    manifest = load_manifest(tmp_path / "ds").sort_values("row")
    assert manifest["split"].tolist() == ["train", "val", "test", "train"]
    rows[1]["fold"] = "holdout"
    _table(tmp_path, rows)
    assert cli_main([*args, "--out", str(tmp_path / "ds2"), "--split-column", "fold"]) == 2
    assert "'holdout' is not one of train, val, test" in capsys.readouterr().err
    rc = cli_main(
        ["evaluate-features", "--dataset", str(tmp_path / "ds"), "--checkpoint", "random"]
        + ["--out", str(tmp_path / "ev")]
    )
    assert rc == 2 and "needs --family and --arch" in capsys.readouterr().err
    rc = cli_main(
        ["evaluate-features", "--dataset", str(tmp_path / "ds"), "--checkpoint", "random"]
        + ["--family", "boc", "--arch", "micro", "--crop-size", "12", "--out", str(tmp_path / "ev")]
    )
    assert rc == 2 and "crop size 12 is not a multiple of micro's patch size 8" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "ev").exists()


# ------------------------------------------------------------------------- components
def test_splits_stratified_and_grouped():
    labels = np.repeat(["a", "b", "c"], 20)
    split = random_split(labels, 0.2, 0.2, seed=0)
    for label in "abc":
        assert (split[labels == label] == "test").sum() == 4
    assert np.array_equal(split, random_split(labels, 0.2, 0.2, seed=0))
    groups = np.array([f"g{i % 6}" for i in range(60)])
    split = group_split(groups, 0.2, 0.2, seed=0)
    for g in np.unique(groups):
        assert len(set(split[groups == g])) == 1
    assert set(split) == {"train", "val", "test"}
    with pytest.raises(UserError, match="too few"):
        group_split(np.array(["g0"] * 5), 0.2, 0.2, seed=0)
    folds = knn_folds(np.arange(60), split, groups, leave_group_out=True)
    assert len(folds.folds) == 6 and folds.protocol == "knn_leave_group_out"
    with pytest.raises(UserError, match="group column"):
        knn_folds(np.arange(60), split, None, leave_group_out=True)


def test_knn_majority_vote_and_intensity_statistics():
    # neighbours' labels, most similar first: a 2-2 tie goes to the label seen first
    votes = majority_vote(np.array([[1, 0, 0, 1], [2, 2, 0, 1], [0, 1, 1, 0]]), 3)
    assert votes.tolist() == [1, 2, 0]
    reference = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    labels = np.array([0, 0, 1, 1, 1])
    pred = knn_predict(reference, labels, np.array([[1.0, 0.05], [0.0, 2.0]]), [1, 5], 2)
    assert pred[1].tolist() == [0, 1] and pred[5].tolist() == [1, 1]

    image = np.zeros((1, 2, 10, 10), np.uint8)
    image[0, 0] = np.arange(100).reshape(10, 10)
    stats = intensity_statistics(image).reshape(2, 7)
    np.testing.assert_allclose(
        stats[0], [49.5, np.arange(100).std(), 4.95, 24.75, 49.5, 74.25, 94.05]
    )
    np.testing.assert_array_equal(stats[1], 0)


def test_umap_figure(tmp_path, monkeypatch):
    """The UMAP figure of evaluate-features: one panel per label, coordinates beside it (the
    embedding itself is figures.umap_embedding, tested with the figures; stubbed here: its
    numba compilation alone takes ~20 s on 2 busy cores)."""
    monkeypatch.setattr("channel_ssl.figures.umap_embedding", lambda x, seed: x[:, :2] * 1.0)
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (8, 6)), rng.normal(4, 1, (8, 6))]).astype("f4")
    dataset = ev.Dataset(
        path=tmp_path,
        manifest=pd.DataFrame({"row": range(16), "image_id": [f"i{i}" for i in range(16)]}),
        store=None,
        channels=["a"],
        image_size=8,
        labels={"label": np.repeat(list(CLASSES[:2]), 8), "other": np.array(["x", ""] * 8)},
        groups=None,
        group_column=None,
        split=np.array(["train"] * 16),
    )
    ev.render_umap(features, dataset, "model", 0, tmp_path / "umap.png")
    assert (tmp_path / "umap.png").stat().st_size > 0
    coords = pd.read_csv(tmp_path / "umap.csv")
    assert list(coords.columns) == ["row", "image_id", "umap_x", "umap_y", "label", "other"]
