"""Classification metrics of the non-CHAMMI evaluations (all return fractions in [0, 1]).

- :func:`accuracy` — JUMP-CP compound classification.
- :func:`per_class_f1`, :func:`macro_f1` — single-label F1 (cell type, cell-cycle stage, Cyclops).
  Macro F1 averages over the labels present in the ground truth unless ``labels`` is given
  (CHAMMI's convention, = sklearn ``f1_score(average='macro', labels=np.unique(y_true))``).
- :func:`multilabel_present_f1` — the multi-label F1 of HPA-FOV protein localisation (28
  classes): mean F1 over the classes (columns of (n, C) indicator matrices) with a positive in the
  ground truth. The one definition of the probes: :func:`channel_ssl.eval.linear_probe.select_on_validation`
  chooses the learning rate with it and :mod:`channel_ssl.eval.dataset_probe` scores the test set
  with it, so a class absent from one split counts in neither.
- :func:`multilabel_macro_f1` — the same over all C classes (= sklearn ``f1_score(average='macro')``
  on indicator matrices); the building block of :func:`multilabel_present_f1`, not a probe score.
- :func:`average_precision`, :func:`mean_average_precision` — AP as the step-wise area under the
  precision-recall curve over distinct score thresholds (= sklearn ``average_precision_score``);
  mAP = mean over classes that have a positive (Meter-ML).

A class with no true and no predicted positives has F1 0 (sklearn's ``zero_division=0``).
"""

from __future__ import annotations

import numpy as np

from channel_ssl.errors import UserError

__all__ = [
    "accuracy",
    "average_precision",
    "macro_f1",
    "mean_average_precision",
    "multilabel_macro_f1",
    "multilabel_present_f1",
    "per_class_f1",
]


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of (n,) predictions equal to the truth."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(f"need equal, non-empty shapes, got {y_true.shape} and {y_pred.shape}")
    return float(np.mean(y_true == y_pred))


def per_class_f1(y_true: np.ndarray, y_pred: np.ndarray, labels) -> np.ndarray:
    """(len(labels),) F1 of each label, one-vs-rest on (n,) single-label arrays."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out = np.zeros(len(labels))
    for k, label in enumerate(labels):
        t, p = y_true == label, y_pred == label
        tp = np.sum(t & p)
        denom = 2 * tp + np.sum(~t & p) + np.sum(t & ~p)
        out[k] = 2 * tp / denom if denom else 0.0
    return out


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, labels=None) -> float:
    """Mean per-class F1 over ``labels`` (default: the labels present in ``y_true``)."""
    labels = np.unique(np.asarray(y_true)) if labels is None else labels
    return float(per_class_f1(y_true, y_pred, labels).mean())


def multilabel_macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro F1 over all classes of (n, C) 0/1 matrices; a class with no true and no predicted
    positives scores 0 (sklearn's default)."""
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    tp = (y_true & y_pred).sum(0)
    fp = (~y_true & y_pred).sum(0)
    fn = (y_true & ~y_pred).sum(0)
    denom = 2 * tp + fp + fn
    per_class = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return float(per_class.mean())


def multilabel_present_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro F1 over the classes (columns) with at least one positive in ``y_true``.

    The one multi-label F1 of the probes: used both to choose the learning rate on validation
    and to score the test set; the multi-label counterpart of :func:`macro_f1` (labels present
    in the truth). A class absent from the truth does not count, even when predicted.
    """
    y_true, y_pred = np.asarray(y_true, bool), np.asarray(y_pred, bool)
    if y_true.shape != y_pred.shape or y_true.ndim != 2:
        raise ValueError(f"need two (n, C) arrays, got {y_true.shape} and {y_pred.shape}")
    present = np.flatnonzero(y_true.any(axis=0))
    if present.size == 0:
        raise UserError("multi-label F1: no class has a positive example in the ground truth")
    return multilabel_macro_f1(y_true[:, present], y_pred[:, present])


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """AP of one class from (n,) 0/1 truth and (n,) scores; NaN when there is no positive.

    Tied scores form one threshold, so the result does not depend on the order of ties.
    """
    y_true = np.asarray(y_true).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if y_true.shape != scores.shape or y_true.ndim != 1:
        raise ValueError(f"need two (n,) arrays, got {y_true.shape} and {scores.shape}")
    n_pos = int(y_true.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, hits = scores[order], y_true[order]
    # last position of every group of tied scores = one threshold
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]
    tp = np.cumsum(hits)[ends]
    precision = tp / (ends + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean AP over the classes (columns) of (n, C) 0/1 truth that have at least one positive."""
    y_true, scores = np.asarray(y_true), np.asarray(scores)
    if y_true.shape != scores.shape or y_true.ndim != 2:
        raise ValueError(f"need two (n, C) arrays, got {y_true.shape} and {scores.shape}")
    ap = np.array([average_precision(y_true[:, c], scores[:, c]) for c in range(y_true.shape[1])])
    if np.all(np.isnan(ap)):
        raise ValueError("no class has a positive example: mAP is undefined")
    return float(np.nanmean(ap))
