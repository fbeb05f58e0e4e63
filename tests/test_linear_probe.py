"""Linear probes: learning on separable data, selection on validation only, metrics, CHAMMI wiring."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from channel_ssl.cli import main as cli_main
from channel_ssl.eval import linear_probe as lp
from channel_ssl.eval.linear_probe import (
    ProbeConfig,
    fit_linear_probe,
    linear_probe_chammi,
)
from channel_ssl.eval.metrics import multilabel_macro_f1

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_chammi import _chammi_like  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: thread hand-off costs far more than it saves (10x on a busy 2-core box)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


FAST = ProbeConfig(n_classifiers=5, lr_min=1e-4, lr_max=1.0, epochs=15, batch_size=32, seed=0)


def _blobs(rng, n, n_classes=4, dim=10, spread=0.5):
    centers = rng.normal(scale=3.0, size=(n_classes, dim))
    y = rng.integers(0, n_classes, size=n)
    return centers[y] + spread * rng.normal(size=(n, dim)), y


def test_separable_data_reaches_high_f1_and_choice_is_best_val():
    rng = np.random.default_rng(0)
    x, y = _blobs(rng, 400)
    res = fit_linear_probe(x[:240], y[:240], x[240:320], y[240:320], x[320:], FAST)
    assert f1_score(y[320:], res.test_prediction, average="macro") > 0.95
    # per-classifier validation scores, recomputed independently: the chosen one is the best
    val_pred = res.probes.predict(x[240:320])
    recomputed = np.array(
        [f1_score(y[240:320], p, labels=np.unique(y[240:320]), average="macro") for p in val_pred]
    )
    np.testing.assert_allclose(res.val_scores, recomputed)
    assert res.best == int(np.argmax(recomputed))
    assert res.lr == pytest.approx(np.logspace(-4, 0, 5)[res.best])
    # the sweep spans bad and good classifiers, so the choice is meaningful
    assert recomputed.min() < 0.9 <= recomputed.max()


def test_deterministic_under_seed():
    rng = np.random.default_rng(1)
    x, y = _blobs(rng, 200, spread=2.0)
    a = fit_linear_probe(x[:120], y[:120], x[120:160], y[120:160], x[160:], FAST)
    b = fit_linear_probe(x[:120], y[:120], x[120:160], y[120:160], x[160:], FAST)
    np.testing.assert_array_equal(a.probes.weight.numpy(), b.probes.weight.numpy())
    np.testing.assert_array_equal(a.test_prediction, b.test_prediction)


def test_choice_follows_validation_not_test():
    """Validation labels agree with the features, test labels are the opposite: the chosen
    classifier must be the val-best (a good one) even though it is the worst on test."""
    rng = np.random.default_rng(2)
    x, y = _blobs(rng, 300, n_classes=2, spread=1.0)
    res = fit_linear_probe(x[:200], y[:200], x[200:250], y[200:250], x[250:], FAST)
    y_test_adversarial = 1 - y[250:]
    test_scores = [
        f1_score(y_test_adversarial, p, average="macro") for p in res.probes.predict(x[250:])
    ]
    assert res.best == int(np.argmax(res.val_scores))
    assert res.best != int(np.argmax(test_scores))
    # and the test inputs do not influence the choice at all
    res2 = fit_linear_probe(
        x[:200], y[:200], x[200:250], y[200:250], rng.normal(size=(7, 10)), FAST
    )
    assert res2.best == res.best


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_multilabel_f1_matches_sklearn_and_multilabel_probe_learns():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 2, size=(50, 6))
    y_pred = rng.integers(0, 2, size=(50, 6))
    y_true[:, 5] = 0  # a class absent from truth and predictions: sklearn scores it 0
    y_pred[:, 5] = 0
    assert multilabel_macro_f1(y_true, y_pred) == pytest.approx(
        f1_score(y_true, y_pred, average="macro", zero_division=0)
    )
    assert multilabel_macro_f1(y_true, y_pred) == pytest.approx(
        f1_score(y_true, y_pred, average="macro")
    )

    x = rng.normal(size=(400, 8))
    targets = (x[:, :4] > 0).astype(int)  # 4 labels, each a half-space
    res = fit_linear_probe(
        x[:250], targets[:250], x[250:320], targets[250:320], x[320:], FAST, multilabel=True
    )
    assert res.test_prediction.shape == (80, 4)
    assert f1_score(targets[320:], res.test_prediction, average="macro") > 0.9


def test_chammi_probe_columns_and_test_rows_unused_for_selection(tmp_path, monkeypatch):
    metas, features = _chammi_like(tmp_path, noise=0.6)
    cfg = ProbeConfig(n_classifiers=4, epochs=10, batch_size=16, seed=0)
    scores = linear_probe_chammi(tmp_path, features, cfg)
    assert list(scores.columns) == [
        "dataset",
        "task",
        "classifier",
        "accuracy",
        "f1_score_macro",
        "lr",
        "val_f1",
    ]
    assert [(r.dataset, r.task) for r in scores.itertuples()][:3] == [
        ("Allen", "Task_one"),
        ("Allen", "Task_two"),
        ("HPA", "Task_one"),
    ]
    # leave-one-group-out: one chosen lr per group (3 cell types, 4 plates); labels unseen in Train are learnt
    hpa3 = scores[(scores.dataset == "HPA") & (scores.task == "Task_three")].iloc[0]
    assert len(str(hpa3.lr).split(";")) == 3 and hpa3.f1_score_macro > 0.5
    assert len(str(scores.iloc[-1].lr).split(";")) == 4

    # scramble the Task_two features: Train-only selection must not change, only the Task_two scores
    scrambled = {k: v.copy() for k, v in features.items()}
    rows = metas["Allen"].index[metas["Allen"]["Task_two"]].to_numpy()
    scrambled["Allen"][rows] = np.random.default_rng(9).normal(
        size=(len(rows), scrambled["Allen"].shape[1])
    )
    again = linear_probe_chammi(tmp_path, {"Allen": scrambled["Allen"]}, cfg)
    base = scores[scores.dataset == "Allen"].reset_index(drop=True)
    assert list(again.lr) == list(base.lr) and list(again.val_f1) == list(base.val_f1)
    assert again.f1_score_macro[0] == base.f1_score_macro[0]
    assert again.f1_score_macro[1] != base.f1_score_macro[1]

    # spy: the features handed to training/selection never include a Task_two row
    seen = []
    real_train = lp.train_probes
    monkeypatch.setattr(
        lp, "train_probes", lambda x, *a, **k: (seen.append(x.copy()), real_train(x, *a, **k))[1]
    )
    linear_probe_chammi(tmp_path, {"Allen": features["Allen"]}, cfg)
    task_rows = {r.tobytes() for r in features["Allen"][rows]}
    assert seen and not any(r.tobytes() in task_rows for x in seen for r in x)


def test_cli_writes_scores(tmp_path):
    metas, features = _chammi_like(tmp_path, seed=1)
    for name in metas:
        (tmp_path / "f" / name).mkdir(parents=True)
        np.save(tmp_path / "f" / name / "cls1.npy", features[name])
    out = tmp_path / "linear.csv"
    argv = [
        "linear-probe",
        "--root",
        str(tmp_path),
        "--features-dir",
        str(tmp_path / "f"),
        "--feature-file",
        "cls1.npy",
    ]
    assert (
        cli_main(
            argv
            + ["--out", str(out), "--n-classifiers", "3", "--epochs", "3", "--batch-size", "32"]
        )
        == 0
    )
    df = pd.read_csv(out)
    assert len(df) == 9 and (df.classifier == "linear").all()


def test_one_multilabel_f1_for_selection_and_test():
    """Validation selection and the HPA-FOV test score use one F1: over the classes present."""
    from types import SimpleNamespace

    from channel_ssl.eval import dataset_probe, linear_probe, metrics
    from channel_ssl.eval.linear_probe import select_on_validation
    from channel_ssl.eval.metrics import multilabel_present_f1

    y_val = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 1, 0]])  # class 2 absent
    good = y_val.copy()
    good[0, 2] = 1  # a false positive on the absent class does not count
    half = y_val.copy()
    half[1, 1] = 0
    probes = SimpleNamespace(multilabel=True, predict=lambda x: np.stack([half, good]))
    scores, best = select_on_validation(probes, np.zeros((4, 1)), y_val)
    # the two definitions differ here: over all 3 classes `good` would score 2/3
    assert multilabel_macro_f1(y_val, good) == pytest.approx(2 / 3)
    assert scores[1] == pytest.approx(1.0) == multilabel_present_f1(y_val, good)
    assert scores[0] == pytest.approx(multilabel_present_f1(y_val, half))
    assert best == 1
    assert (
        dataset_probe.multilabel_present_f1
        is linear_probe.multilabel_present_f1
        is metrics.multilabel_present_f1
    )
    with pytest.raises(lp.UserError, match="no class has a positive"):
        multilabel_present_f1(np.zeros((2, 3)), np.ones((2, 3)))


def _separate_linears_reference(x, y, n_classes, config, multilabel):
    """The sweep as one nn.Linear per lr under one torch AdamW (a group per lr), LambdaLR."""
    import math

    import torch

    x = torch.as_tensor(x)
    mean, std = x.mean(0), x.std(0, unbiased=False)
    x = (x - mean) / torch.where(std > 0, std, torch.ones_like(std))
    y = torch.as_tensor(y)
    gen = torch.Generator().manual_seed(config.seed)
    lrs = config.learning_rates()
    linears = [torch.nn.Linear(x.shape[1], n_classes) for _ in lrs]
    with torch.no_grad():
        for lin in linears:
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * 0.01)
            lin.bias.zero_()
    groups = [
        {"params": lin.parameters(), "lr": float(lr)} for lin, lr in zip(linears, lrs, strict=True)
    ]
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    batch = min(config.batch_size, len(x))
    total = config.epochs * math.ceil(len(x) / batch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total))
    )
    loss_fn = torch.nn.BCEWithLogitsLoss() if multilabel else torch.nn.CrossEntropyLoss()
    for _ in range(config.epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            loss = sum(loss_fn(lin(x[idx]), y[idx]) for lin in linears)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    return torch.stack([lin.weight.detach() for lin in linears])


@pytest.mark.parametrize("multilabel", [False, True])
def test_batched_sweep_equals_separate_linears_under_adamw(multilabel):
    """Float tolerance: the batched product sums in another order (|dW| <= 1e-4 here)."""
    from channel_ssl.eval.linear_probe import ProbeConfig, train_probes

    rng = np.random.default_rng(0)
    n, n_features, n_classes = 300, 12, 4
    x = rng.standard_normal((n, n_features)).astype(np.float32)
    if multilabel:
        y = (rng.random((n, n_classes)) < 0.4).astype(np.float32)
    else:
        y = rng.integers(0, n_classes, n)
        x[np.arange(n), y] += 1.0
    config = ProbeConfig(n_classifiers=5, epochs=3, batch_size=64, weight_decay=0.05)
    ours = train_probes(x, y, n_classes, config, multilabel=multilabel).weight
    reference = _separate_linears_reference(x, y, n_classes, config, multilabel)
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("multilabel", [False, True])
def test_confident_classifiers_equal_separate_linears(multilabel):
    """Probabilities under e^-64 are taken as 0 (fast path): on well-separated classes with
    large learning rates, where many logits are that far out, the weights still equal
    torch's."""
    from channel_ssl.eval.linear_probe import ProbeConfig, train_probes

    rng = np.random.default_rng(1)
    n, n_features, n_classes = 400, 16, 4
    x = rng.standard_normal((n, n_features)).astype(np.float32)
    y = rng.integers(0, n_classes, n)
    x[np.arange(n), y] += 6.0
    if multilabel:
        y = np.eye(n_classes, dtype=np.float32)[y]
    config = ProbeConfig(n_classifiers=3, lr_min=0.3, lr_max=3.0, epochs=4, batch_size=50)
    probes = train_probes(x, y, n_classes, config, multilabel=multilabel)
    logits = probes.logits(x)[-1]
    if multilabel:
        assert (logits < -64).float().mean() > 0.1  # the fast path was taken
    else:
        gaps = logits.amax(dim=1, keepdim=True) - logits
        assert (gaps > 64).float().mean() > 0.5
    reference = _separate_linears_reference(x, y, n_classes, config, multilabel)
    np.testing.assert_allclose(probes.weight.numpy(), reference.numpy(), atol=1e-4, rtol=1e-5)
