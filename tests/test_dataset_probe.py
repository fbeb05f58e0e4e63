"""probe-dataset end to end on synthetic features and manifests."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from channel_ssl.cli import main as cli_main
from channel_ssl.data.readers.hpa import LOCALISATIONS
from channel_ssl.data.readers.meterml import CLASSES as METER_CLASSES
from channel_ssl.data.shards import write_manifest
from channel_ssl.errors import UserError
from channel_ssl.eval.dataset_probe import TASKS, probe_dataset, task_data
from channel_ssl.eval.linear_probe import ProbeConfig

FAST = ProbeConfig(n_classifiers=4, lr_min=1e-3, lr_max=1e-1, epochs=20, batch_size=32, seed=0)
PROBE_ARGS = [
    "--n-classifiers",
    "4",
    "--lr-min",
    "1e-3",
    "--lr-max",
    "0.1",
    "--epochs",
    "20",
    "--batch-size",
    "32",
]


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _manifest(labels, splits, factors=None, n_channels=5) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame(
        {
            "source": "synthetic",
            "image_id": [f"img{i}" for i in range(n)],
            "row": np.arange(n),
            "channels": "|".join(f"c{k}" for k in range(n_channels)),
            "n_channels": n_channels,
            "height": 8,
            "width": 8,
            "label": labels,
            "split": splits,
            "tasks": "",
            "factors": [json.dumps(f) for f in (factors or [{}] * n)],
            "shard": "shard-00000.npy",
            "offset": np.arange(n),
        }
    )


def _write(tmp_path, manifest, features, name="m"):
    mpath, fpath = tmp_path / f"{name}.parquet", tmp_path / f"{name}.npy"
    write_manifest(mpath, manifest)
    np.save(fpath, features.astype(np.float32))
    return str(fpath), str(mpath)


def _splits(n, rng, with_val=True):
    u = rng.random(n)
    if with_val:
        return np.where(u < 0.6, "train", np.where(u < 0.8, "val", "test"))
    return np.where(u < 0.75, "train", "test")


def _single_label_data(rng, classes, n=240, dim=12, spread=0.4):
    ids = rng.integers(0, len(classes), n)
    centres = rng.normal(scale=3.0, size=(len(classes), dim))
    x = centres[ids] + rng.normal(scale=spread, size=(n, dim))
    return np.array(classes)[ids], x


def test_jump_accuracy_on_separable_features_via_cli(tmp_path):
    rng = np.random.default_rng(0)
    labels, x = _single_label_data(rng, ["DMSO", "CACNB4", "AKR1C1", "KCNN4"])
    features, manifest = _write(tmp_path, _manifest(labels, _splits(len(labels), rng)), x)
    out = tmp_path / "scores.csv"
    argv = [
        "probe-dataset",
        "--features",
        features,
        "--manifest",
        manifest,
        "--task",
        "jumpcp_compound",
    ]
    argv += ["--column", "JUMP-CP 5 channels", "--channels", "5", "--out", str(out), *PROBE_ARGS]
    assert cli_main(argv) == 0
    scores = pd.read_csv(out)
    assert list(scores.columns[:2]) == ["column", "value"]
    assert list(scores["column"]) == ["JUMP-CP 5 channels"]
    assert scores["value"].item() > 95  # percent
    # the wrong channel view is refused
    argv[argv.index("5")] = "8"
    assert cli_main(argv) == 2


def test_feature_rows_follow_the_manifest_row_column(tmp_path):
    rng = np.random.default_rng(1)
    labels, x = _single_label_data(rng, ["a", "b", "c"])
    manifest = _manifest(labels, _splits(len(labels), rng))
    reference = probe_dataset(*_write(tmp_path, manifest, x, "ref"), "wtc_cell_cycle", "F1", FAST)
    # same rows in another order
    shuffled = manifest.sample(frac=1.0, random_state=0).reset_index(drop=True)
    again = probe_dataset(*_write(tmp_path, shuffled, x, "shuf"), "wtc_cell_cycle", "F1", FAST)
    assert reference["value"].item() > 90
    assert again["value"].item() > 90
    # features not aligned with the rows -> chance
    wrong = probe_dataset(
        *_write(tmp_path, manifest, x[rng.permutation(len(x))], "wrong"),
        "wtc_cell_cycle",
        "F1",
        FAST,
    )
    assert wrong["value"].item() < 60


def test_wrong_feature_row_count_names_both_counts(tmp_path):
    rng = np.random.default_rng(2)
    labels, x = _single_label_data(rng, ["a", "b"], n=50)
    features, manifest = _write(tmp_path, _manifest(labels, _splits(50, rng)), x[:47])
    with pytest.raises(UserError, match=r"has 47 rows but manifest .* has 50 rows"):
        probe_dataset(features, manifest, "jumpcp_compound", "acc", FAST)


def test_hpa_cell_type_uses_factors_and_carves_val_from_train(tmp_path, caplog):
    rng = np.random.default_rng(3)
    cell_types, x = _single_label_data(rng, ["A-431", "U-2 OS", "HeLa"], n=200)
    factors = [{"cell_type": c, "protein_location": []} for c in cell_types]
    manifest = _manifest([""] * 200, _splits(200, rng, with_val=False), factors, n_channels=4)
    with caplog.at_level("INFO"):
        scores = probe_dataset(
            *_write(tmp_path, manifest, x), "hpa_fov_cell_type", "Cell type", FAST
        )
    assert scores["value"].item() > 90
    assert "carved" in caplog.text


def test_hpa_protein_multilabel_drops_unlabelled_rows(tmp_path):
    rng = np.random.default_rng(4)
    n, used = 300, [0, 7, 23, 25]  # nucleoplasm, golgi, mitochondria, cytosol
    y = (rng.random((n, len(used))) < 0.35).astype(int)
    y[:20] = 0  # no localisation: dropped
    x = y @ rng.normal(scale=3.0, size=(len(used), 10)) + rng.normal(scale=0.3, size=(n, 10))
    factors = []
    for i in range(n):
        names = [LOCALISATIONS[used[k]] for k in np.flatnonzero(y[i])]
        factors.append(
            {"cell_type": "BJ", "protein_location": names + (["vesicles"] if i % 5 == 0 else [])}
        )
    manifest = _manifest([""] * n, _splits(n, rng, with_val=False), factors, n_channels=4)
    data = task_data(TASKS["hpa_fov_protein"], manifest, x.astype(np.float32), "m")
    # rows with no localisation (the first 20 and random ones) are dropped; 'vesicles' is no class
    labelled = y.any(axis=1)
    assert data.y.shape == (labelled.sum(), 28) and labelled.sum() < n - 20
    np.testing.assert_array_equal(data.y[:, used], y[labelled])
    scores = probe_dataset(*_write(tmp_path, manifest, x), "hpa_fov_protein", "Protein loc.", FAST)
    assert scores["value"].item() > 85


def test_cyclops_reports_rare_classes_with_paper_names(tmp_path):
    rng = np.random.default_rng(5)
    classes = ["BUDTIP", "CELLPERIPHERY", "BUDNECK", "ACTIN", "CYTOPLASM", "NUCLEI"]
    labels, x = _single_label_data(rng, classes, n=300)
    features, manifest = _write(tmp_path, _manifest(labels, _splits(300, rng), n_channels=2), x)
    scores = probe_dataset(features, manifest, "cyclops_localization", "", FAST)
    assert list(scores["column"]) == [
        "Budtip 1.5 %",
        "Cell periphery 1.9%",
        "Budneck 2.4%",
        "Actin 3.8%",
        "All",
    ]
    assert (scores["value"] > 90).all()
    renamed = probe_dataset(
        features, manifest, "cyclops_localization", "F1", FAST, columns_map={"BUDTIP": "tip"}
    )
    assert renamed["column"].iloc[0] == "F1 tip" and renamed["column"].iloc[-1] == "F1 All"


def test_meterml_map_keeps_negatives(tmp_path):
    rng = np.random.default_rng(6)
    n = 300
    y = (rng.random((n, 6)) < 0.2).astype(int)
    x = y @ rng.normal(scale=3.0, size=(6, 10)) + rng.normal(scale=0.3, size=(n, 10))
    labels = ["|".join(c for c, on in zip(METER_CLASSES, row, strict=True) if on) for row in y]
    manifest = _manifest(labels, _splits(n, rng), n_channels=19)
    data = task_data(TASKS["meterml_methane"], manifest, x.astype(np.float32), "m")
    assert len(data.y) == n and (data.y.sum(axis=1) == 0).sum() == (y.sum(axis=1) == 0).sum() > 0
    scores = probe_dataset(*_write(tmp_path, manifest, x), "meterml_methane", "mAP", FAST)
    assert scores["metric"].item() == "map" and scores["value"].item() > 90
    # random features -> near the positive rate, far below
    noise = probe_dataset(
        *_write(tmp_path, manifest, rng.normal(size=x.shape), "noise"),
        "meterml_methane",
        "mAP",
        FAST,
    )
    assert noise["value"].item() < 50


def test_hpa_protein_selection_and_test_score_use_one_f1(tmp_path):
    """Only 4 of the 28 localisations occur, so an F1 over all 28 classes and one over the
    classes present differ (by a factor 4/28). The test rows repeat the validation rows: the
    chosen classifier's validation score (the selection) must equal its test score."""
    rng = np.random.default_rng(7)
    n_train, n_val, used = 160, 60, [0, 7, 23, 25]
    y = (rng.random((n_train + n_val, len(used))) < 0.4).astype(int)
    y[~y.any(axis=1), 0] = 1  # every row has a localisation (none is dropped)
    x = y @ rng.normal(size=(len(used), 10)) + rng.normal(scale=1.2, size=(len(y), 10))
    y, x = np.concatenate([y, y[n_train:]]), np.concatenate([x, x[n_train:]])
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_val
    factors = [
        {"cell_type": "BJ", "protein_location": [LOCALISATIONS[used[k]] for k in np.flatnonzero(r)]}
        for r in y
    ]
    manifest = _manifest([""] * len(y), np.array(splits), factors, n_channels=4)
    scores = probe_dataset(*_write(tmp_path, manifest, x), "hpa_fov_protein", "Protein loc.", FAST)
    value, val_score = scores["value"].item(), scores["val_score"].item()
    assert 30 < value < 99  # noisy enough that the definitions could tell classifiers apart
    assert 100 * val_score == pytest.approx(value)  # > 100 * 4 / 28: not the all-class F1
