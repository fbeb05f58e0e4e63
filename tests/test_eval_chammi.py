"""CHAMMI 1-NN evaluation vs an independent brute-force reference on small CHAMMI-like data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score
from sklearn.neighbors import KNeighborsClassifier

from channel_ssl.cli import main as cli_main
from channel_ssl.errors import UserError
from channel_ssl.eval.eval_chammi import chammi_summary, evaluate_chammi

TASK_NAMES = ["Task_one", "Task_two", "Task_three", "Task_four"]


def _make_dataset(
    rng, dataset: str, n_per_split: dict, train_labels, extra=None, group_col=None, groups=None
):
    """Shuffled CHAMMI-like metadata; ``extra`` = (split, labels) whose labels never occur in Train."""
    rows = []
    for split, n in n_per_split.items():
        labels = extra[1] if extra and split == extra[0] else train_labels
        rows.extend({"train_test_split": split, "Label": str(rng.choice(labels))} for _ in range(n))
    meta = pd.DataFrame(rows)
    meta = meta.sample(frac=1.0, random_state=int(rng.integers(1 << 30))).reset_index(drop=True)
    meta["file_path"] = [f"{dataset}/crops/{i}.png" for i in range(len(meta))]
    meta["channel_width"] = 8
    for task in TASK_NAMES:
        if task in n_per_split:
            meta[task] = meta["train_test_split"] == task
    if group_col:
        meta[group_col] = rng.choice(groups, size=len(meta))
    return meta


def _chammi_like(tmp_path, seed=0, dim=6, noise=1.2):
    rng = np.random.default_rng(seed)
    metas = {
        "Allen": _make_dataset(
            rng, "Allen", {"Train": 60, "Task_one": 25, "Task_two": 30}, ["M0", "M1M2", "M3"]
        ),
        "HPA": _make_dataset(
            rng,
            "HPA",
            {"Train": 60, "Task_one": 20, "Task_two": 20, "Task_three": 30},
            ["golgi", "mito", "speckles"],
            ("Task_three", ["cytosol", "er"]),
            "cell_type",
            ["A-431", "U2OS", "RT4"],
        ),
        "CP": _make_dataset(
            rng,
            "CP",
            {"Train": 60, "Task_one": 20, "Task_two": 20, "Task_three": 20, "Task_four": 36},
            ["DMSO", "BRD-A", "BRD-B"],
            ("Task_four", ["BRD-X", "BRD-Y", "BRD-Z"]),
            "Plate",
            ["P1", "P2", "P3", "P4"],
        ),
    }
    features = {}
    for name, meta in metas.items():
        centroids = {lab: rng.normal(size=dim) for lab in pd.unique(meta["Label"])}
        feats = np.stack([centroids[lab] for lab in meta["Label"]]) + noise * rng.normal(
            size=(len(meta), dim)
        )
        features[name] = feats.astype(np.float32)
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        meta.to_csv(tmp_path / name / "enriched_meta.csv", index=False)
    return metas, features


def _reference_scores(metas, features):
    """Independent reference: sklearn brute-force cosine 1-NN, leave-one-group-out done with pandas."""
    leave_out = {"HPA": ("Task_three", "cell_type"), "CP": ("Task_four", "Plate")}
    out = []
    for name in ("Allen", "HPA", "CP"):
        meta, feats = metas[name], features[name].astype(np.float64)
        # MorphEm encodes labels by first appearance; the macro-F1 summation order follows the codes
        labels = pd.factorize(meta["Label"])[0]
        train = meta.index[meta["train_test_split"] == "Train"].to_numpy()
        tasks = [t for t in TASK_NAMES if t in set(meta["train_test_split"])]
        for task in tasks:
            task_meta = meta[meta[task]]
            if name in leave_out and leave_out[name][0] == task:
                col = leave_out[name][1]
                folds = []
                for group in task_meta[col].drop_duplicates():
                    query = task_meta.index[task_meta[col] == group].to_numpy()
                    others = task_meta.index[task_meta[col] != group].to_numpy()
                    folds.append((np.concatenate([train, others]), query))
            else:
                folds = [(train, task_meta.index.to_numpy())]
            truth, pred = [], []
            for ref, query in folds:
                knn = KNeighborsClassifier(n_neighbors=1, metric="cosine", algorithm="brute")
                knn.fit(feats[ref], labels[ref])
                pred.append(knn.predict(feats[query]))
                truth.append(labels[query])
            truth, pred = np.concatenate(truth), np.concatenate(pred)
            out.append(
                (
                    name,
                    task,
                    np.mean(truth == pred),
                    f1_score(truth, pred, labels=np.unique(truth), average="macro"),
                )
            )
    return out


def _assert_no_near_ties(metas, features):
    """Guard the test data: the best and second-best cosine similarities are clearly apart."""
    for name in metas:
        x = features[name].astype(np.float64)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        sims = np.sort(x @ x.T, axis=1)
        assert np.min(sims[:, -2] - sims[:, -3]) > 1e-5  # [-1] is the row itself


def test_matches_independent_reference_exactly(tmp_path):
    metas, features = _chammi_like(tmp_path)
    _assert_no_near_ties(metas, features)
    scores = evaluate_chammi(tmp_path, features)
    expected = _reference_scores(metas, features)
    assert list(scores.columns) == ["dataset", "task", "classifier", "accuracy", "f1_score_macro"]
    assert [(r.dataset, r.task) for r in scores.itertuples()] == [(e[0], e[1]) for e in expected]
    assert (scores["classifier"] == "knn").all()
    for row, (_, _, acc, f1) in zip(scores.itertuples(), expected, strict=True):
        assert row.accuracy == acc
        assert row.f1_score_macro == f1
    # the data is neither trivial nor random: scores spread between chance and perfect
    assert 0.3 < scores["f1_score_macro"].mean() < 0.99


def test_leave_one_group_out_uses_other_groups(tmp_path):
    """HPA Task_three labels never occur in Train: only the other groups' rows can predict them."""
    metas, features = _chammi_like(tmp_path, noise=0.05)
    scores = evaluate_chammi(tmp_path, {"HPA": features["HPA"]}).set_index("task")
    assert scores.loc["Task_three", "accuracy"] == 1.0


def test_cli_string_booleans_and_summary(tmp_path):
    metas, features = _chammi_like(tmp_path, seed=3)
    # real files may hold booleans as the strings 'True'/'False'
    for name, meta in metas.items():
        text = meta.copy()
        for task in TASK_NAMES:
            if task in text:
                text[task] = text[task].map({True: "True", False: "False"})
        text.to_csv(tmp_path / name / "enriched_meta.csv", index=False)
        feat_dir = tmp_path / "feats" / name
        feat_dir.mkdir(parents=True)
        np.save(feat_dir / "cls1.npy", features[name])
    out = tmp_path / "scores.csv"
    argv = ["eval-chammi", "--root", str(tmp_path), "--features-dir", str(tmp_path / "feats")]
    assert (
        cli_main(
            argv
            + ["--feature-file", "cls1.npy", "--out", str(out), "--json-dir", str(tmp_path / "j")]
        )
        == 0
    )
    written = pd.read_csv(out)
    expected = _reference_scores(metas, features)
    np.testing.assert_array_equal(written["f1_score_macro"].to_numpy(), [e[3] for e in expected])
    assert (tmp_path / "j" / "CP_knn_cosine_results.json").exists()


def test_row_count_mismatch_names_both_files(tmp_path, capsys):
    metas, features = _chammi_like(tmp_path)
    for name in metas:
        (tmp_path / "feats" / name).mkdir(parents=True)
        feats = features[name][:-1] if name == "HPA" else features[name]
        np.save(tmp_path / "feats" / name / "f.npy", feats)
    argv = ["eval-chammi", "--root", str(tmp_path), "--features-dir", str(tmp_path / "feats")]
    assert cli_main(argv + ["--feature-file", "f.npy", "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    n = len(metas["HPA"])
    assert f"{n - 1} rows" in err and f"{n} rows" in err
    assert (
        str(tmp_path / "feats" / "HPA" / "f.npy") in err
        and str(tmp_path / "HPA" / "enriched_meta.csv") in err
    )
    assert not (tmp_path / "o.csv").exists()


def test_nan_features_rejected(tmp_path):
    metas, features = _chammi_like(tmp_path)
    bad = features["CP"].copy()
    bad[7, 2] = np.nan
    with pytest.raises(UserError, match="NaN or inf.*row 7"):
        evaluate_chammi(tmp_path, {"CP": bad})


def test_summary_reproduces_paper_table4_boc():
    # table 4, DINO BoC: task F1 scores in percent as printed
    tasks = {
        ("Allen", "Task_one"): 79.4,
        ("Allen", "Task_two"): 71.4,
        ("HPA", "Task_one"): 87.0,
        ("HPA", "Task_two"): 56.4,
        ("HPA", "Task_three"): 30.2,
        ("CP", "Task_one"): 93.5,
        ("CP", "Task_two"): 58.5,
        ("CP", "Task_three"): 20.1,
        ("CP", "Task_four"): 16.3,
    }
    df = pd.DataFrame(
        [
            {
                "dataset": d,
                "task": t,
                "classifier": "knn",
                "accuracy": 0.0,
                "f1_score_macro": v / 100,
            }
            for (d, t), v in tasks.items()
        ]
    )
    s = chammi_summary(df)
    assert s["HPA"] == pytest.approx((56.4 + 30.2) / 2)
    assert round(s["HPA"], 1) == 43.3
    assert round(s["CP"], 1) == 31.6 and round(s["WTC"], 1) == 71.4
    assert round(s["Mean"], 1) == 48.8
    assert s["CP Task4"] == pytest.approx(16.3)
    with pytest.raises(UserError, match="CP task Task_four"):
        chammi_summary(df.iloc[:-1])


@pytest.mark.parametrize("scale", [1e37, 1e-40])
def test_scores_invariant_to_feature_scale(tmp_path, scale):
    """Float32 features ~1e37 (squares overflow) or denormal (squares underflow) score as unscaled."""
    metas, features = _chammi_like(tmp_path)
    expected = evaluate_chammi(tmp_path, features)
    scaled = {
        name: (f.astype(np.float64) * scale).astype(np.float32) for name, f in features.items()
    }
    assert all(np.isfinite(f).all() and f.any(axis=1).all() for f in scaled.values())
    scores = evaluate_chammi(tmp_path, scaled)
    pd.testing.assert_frame_equal(scores, expected)
    assert 0.3 < scores["f1_score_macro"].mean() < 0.99


def test_l2_normalise_rejects_non_finite_rows_by_index():
    from channel_ssl.eval.eval_chammi import _l2_normalise

    x = np.ones((3, 4), dtype=np.float32)
    x[2, 1] = np.inf
    with pytest.raises(UserError, match="row 2"):
        _l2_normalise(x, "query features")
    x[2, 1] = 0.0
    x[1] = 0.0
    with pytest.raises(UserError, match="row 1 is all zeros"):
        _l2_normalise(x)


def test_chammi_summary_of_one_dataset():
    import pandas as pd

    from channel_ssl.eval.eval_chammi import chammi_summary

    rows = [("HPA", "Task_one", 0.5), ("HPA", "Task_two", 0.4), ("HPA", "Task_three", 0.6)]
    scores = pd.DataFrame(rows, columns=["dataset", "task", "f1_score_macro"])
    summary = chammi_summary(scores, datasets=("HPA",))
    assert summary == pytest.approx(
        {"Mean": 50.0, "HPA": 50.0, "HPA Task1": 50.0, "HPA Task2": 40.0, "HPA Task3": 60.0}
    )


def test_l2_normalise_bit_identical_on_ordinary_rows_and_safe_on_extreme_ones():
    """Ordinary rows: exactly the reference's x / ||x||. Rows x1e37 (squares overflow float32)
    or denormal (~1e-40, squares underflow) in the same matrix: unit rows, same directions."""
    from channel_ssl.eval.eval_chammi import _l2_normalise

    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 16)).astype(np.float32)
    plain = x / np.linalg.norm(x, axis=-1, keepdims=True)
    np.testing.assert_array_equal(_l2_normalise(x), plain)
    mixed = x.copy()
    mixed[1] = (x[1].astype(np.float64) * 1e37).astype(np.float32)
    mixed[3] = (x[3].astype(np.float64) * 1e-40).astype(np.float32)
    with np.errstate(all="ignore"):
        naive = mixed / np.linalg.norm(mixed, axis=-1, keepdims=True)
    assert not np.allclose(naive[[1, 3]], plain[[1, 3]], atol=1e-3)  # what the plain norm gives
    out = _l2_normalise(mixed)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[[0, 2, 4, 5]], plain[[0, 2, 4, 5]])
    np.testing.assert_allclose(out[1], plain[1], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out[3], plain[3], atol=1e-4)  # denormals keep ~5 digits
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-6)


def test_all_zero_feature_row_is_an_error_naming_the_metadata_row(tmp_path):
    """An all-zero row has no direction: rejected (row index of the metadata), never scored."""
    metas, features = _chammi_like(tmp_path)
    bad = features["HPA"].copy()
    bad[11] = 0.0
    with pytest.raises(UserError, match="row 11 is all zeros; cosine similarity is undefined"):
        evaluate_chammi(tmp_path, {"HPA": bad})
