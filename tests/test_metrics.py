"""Evaluation metrics against scikit-learn on fixed inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score

from channel_ssl.eval import linear_probe, metrics
from channel_ssl.eval.metrics import (
    accuracy,
    average_precision,
    macro_f1,
    mean_average_precision,
    multilabel_macro_f1,
    multilabel_present_f1,
    per_class_f1,
)


@pytest.fixture
def single_label():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 6, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 7, 200))  # 6 is never true
    return y_true, y_pred


@pytest.fixture
def multi_label():
    rng = np.random.default_rng(1)
    y_true = (rng.random((150, 28)) < 0.15).astype(int)
    y_true[:, 27] = 0  # a class nobody has (rods & rings in a small test set)
    noise = rng.random((150, 28))
    y_pred = np.where(noise < 0.8, y_true, 1 - y_true)
    scores = y_true * 0.6 + rng.random((150, 28))
    return y_true, y_pred, scores


def test_accuracy_matches_sklearn(single_label):
    y_true, y_pred = single_label
    assert accuracy(y_true, y_pred) == pytest.approx(accuracy_score(y_true, y_pred))


def test_per_class_and_macro_f1_match_sklearn(single_label):
    y_true, y_pred = single_label
    labels = [0, 2, 5, 6]
    assert per_class_f1(y_true, y_pred, labels) == pytest.approx(
        f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    )
    # default: labels present in the ground truth (6 is predicted but never true)
    assert macro_f1(y_true, y_pred) == pytest.approx(
        f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0)
    )
    assert macro_f1(y_true, y_pred) != pytest.approx(f1_score(y_true, y_pred, average="macro"))


def test_multilabel_macro_f1_matches_sklearn_over_28_classes(multi_label):
    y_true, y_pred, _ = multi_label
    expected = f1_score(y_true, y_pred, average="macro", zero_division=0)
    assert multilabel_macro_f1(y_true, y_pred) == pytest.approx(expected)
    # the probe's selection metric and the reported one are the same function, from metrics
    assert linear_probe.multilabel_present_f1 is metrics.multilabel_present_f1


def test_multilabel_present_f1_matches_sklearn_over_the_classes_present(multi_label):
    y_true, y_pred, _ = multi_label
    y_true, y_pred = y_true.copy(), y_pred.copy()
    y_true[:, [3, 17]] = 0  # two more classes absent from the truth (27 already is), predicted
    y_pred[:, [3, 17]] = 1
    present = np.flatnonzero(y_true.any(axis=0))
    assert len(present) == 25
    expected = f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
    assert multilabel_present_f1(y_true, y_pred) == pytest.approx(expected)
    # here the two definitions differ: over all 28 classes the absent ones count as 0
    assert multilabel_macro_f1(y_true, y_pred) == pytest.approx(expected * 25 / 28)
    with pytest.raises(ValueError, match=r"need two \(n, C\) arrays"):
        multilabel_present_f1(y_true, y_pred[:, :5])


def test_average_precision_matches_sklearn_with_ties():
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0, 0, 1])
    scores = np.array([0.9, 0.9, 0.5, 0.5, 0.5, 0.3, 0.3, 0.2, 0.1, 0.1])
    assert average_precision(y, scores) == pytest.approx(average_precision_score(y, scores))
    # ties form one threshold: the order of tied items does not matter
    swap = np.array([1, 0, 4, 3, 2, 6, 5, 7, 9, 8])
    assert average_precision(y[swap], scores[swap]) == pytest.approx(average_precision(y, scores))


def test_mean_average_precision_matches_sklearn_macro(multi_label):
    y_true, _, scores = multi_label
    has_positive = y_true.any(axis=0)
    expected = average_precision_score(
        y_true[:, has_positive], scores[:, has_positive], average="macro"
    )
    assert mean_average_precision(y_true, scores) == pytest.approx(expected)
    assert np.isnan(average_precision(y_true[:, 27], scores[:, 27]))


def test_metrics_reject_bad_shapes():
    with pytest.raises(ValueError, match="shapes"):
        accuracy(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="no class has a positive"):
        mean_average_precision(np.zeros((4, 2)), np.ones((4, 2)))
