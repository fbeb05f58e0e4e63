"""The scoring protocols of ``evaluate-features``: cosine k-NN (majority vote) and the linear probe.

- **k-NN**: features L2-normalised, cosine similarity, the k most similar reference images vote;
  the label with most votes wins, a tie goes to the tied label whose first vote came from the
  most similar image. A k larger than the reference set uses the whole set. Reference ->
  query: the ``train`` split -> the ``test`` split, or, leave-one-group-out, for every group
  all labelled images of the other groups -> the images of that group (predictions of all
  groups scored together).
- **linear probe**: :func:`channel_ssl.eval.linear_probe.fit_linear_probe` — the project's
  learning-rate sweep (14 classifiers by default) trained on ``train``, the best chosen on
  ``val`` only (carved from ``train``, stratified and seeded, when the dataset has no ``val``
  images), then ``test`` predicted once.

Scores: macro F1 over the labels present in the scored ground truth, and accuracy
(:mod:`channel_ssl.eval.metrics`), both as fractions here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from channel_ssl.errors import UserError
from channel_ssl.eval.linear_probe import ProbeConfig, fit_linear_probe, split_train_val
from channel_ssl.eval.metrics import accuracy, macro_f1

log = logging.getLogger("channel_ssl.own_data.evaluate")


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm (float64); an all-zero row stays zero (similar to nothing)."""
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise UserError(f"feature row {row} holds NaN or inf")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def majority_vote(neighbour_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """``(Q, k)`` labels of the neighbours, most similar first -> ``(Q,)`` winners (module rule)."""
    q, k = neighbour_labels.shape
    onehot = neighbour_labels[:, :, None] == np.arange(n_classes)[None, None, :]  # (Q, k, C)
    counts = onehot.sum(axis=1)
    first = np.where(
        onehot.any(axis=1), onehot.argmax(axis=1), k
    )  # rank of each label's first vote
    return np.argmax(counts * (k + 1) - first, axis=1)


def knn_predict(
    reference: np.ndarray,
    reference_labels: np.ndarray,
    queries: np.ndarray,
    ks: list[int],
    n_classes: int,
    chunk: int = 1024,
) -> dict[int, np.ndarray]:
    """``k -> (Q,)`` majority-vote predictions of cosine k-NN for every k of ``ks``."""
    if len(reference) == 0:
        raise UserError("k-NN: no reference images")
    ref = l2_normalise(reference)
    k_top = min(max(ks), len(ref))
    out = {k: np.empty(len(queries), dtype=np.int64) for k in ks}
    for start in range(0, len(queries), chunk):
        q = l2_normalise(queries[start : start + chunk])
        sims = q @ ref.T
        top = np.argpartition(-sims, k_top - 1, axis=1)[:, :k_top]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        nearest = np.take_along_axis(top, order, axis=1)  # (q, k_top), most similar first
        labels = reference_labels[nearest]
        for k in ks:
            out[k][start : start + len(q)] = majority_vote(labels[:, : min(k, k_top)], n_classes)
    return out


def standardise(reference: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """z-score every array with the mean and std of ``reference`` (constant columns: std 1)."""
    mean = reference.mean(axis=0)
    std = reference.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [(a - mean) / std for a in (reference, *others)]


@dataclass
class Folds:
    """Who is reference and who is scored in the k-NN protocol (row indices into the features)."""

    protocol: str
    folds: list[tuple[np.ndarray, np.ndarray]]  # (reference rows, query rows) per fold


def knn_folds(
    labelled: np.ndarray, split: np.ndarray, groups: np.ndarray | None, leave_group_out: bool
) -> Folds:
    """The k-NN folds over the ``labelled`` rows (module docstring)."""
    if leave_group_out:
        if groups is None:
            raise UserError(
                "--knn-leave-group-out needs a group column (import-images --group-column)"
            )
        names = list(dict.fromkeys(groups[labelled].tolist()))
        if len(names) < 2:
            raise UserError(f"--knn-leave-group-out needs at least 2 groups; found {names}")
        folds = [(labelled[groups[labelled] != g], labelled[groups[labelled] == g]) for g in names]
        return Folds("knn_leave_group_out", folds)
    train = labelled[split[labelled] == "train"]
    test = labelled[split[labelled] == "test"]
    if len(train) == 0 or len(test) == 0:
        raise UserError(
            f"k-NN needs labelled train and test images; found {len(train)} train and {len(test)} "
            "test (import with --test-fraction > 0, or use --knn-leave-group-out)"
        )
    return Folds("knn", [(train, test)])


def knn_scores(
    features: np.ndarray,
    labels: np.ndarray,
    folds: Folds,
    ks: list[int],
    n_classes: int,
    z_score: bool = False,
) -> dict[int, tuple[float, float]]:
    """``k -> (macro F1, accuracy)`` of the k-NN protocol; ``z_score`` standardises the features
    with each fold's reference rows first (for raw statistics of mixed scales)."""
    predictions: dict[int, list[np.ndarray]] = {k: [] for k in ks}
    truths = []
    for reference, queries in folds.folds:
        x_ref, x_query = features[reference], features[queries]
        if z_score:
            x_ref, x_query = standardise(x_ref, x_query)
        if len(reference) < max(ks):
            log.warning(
                "k-NN: %d reference image(s), fewer than k=%d; the whole set votes",
                len(reference),
                max(ks),
            )
        fold = knn_predict(x_ref, labels[reference], x_query, ks, n_classes)
        for k in ks:
            predictions[k].append(fold[k])
        truths.append(labels[queries])
    truth = np.concatenate(truths)
    return {
        k: (macro_f1(truth, np.concatenate(p)), accuracy(truth, np.concatenate(p)))
        for k, p in predictions.items()
    }


@dataclass
class ProbeScore:
    f1: float
    accuracy: float
    lr: float
    val_f1: float
    n_train: int
    n_val: int
    n_test: int
    carved_val: bool


def probe_rows(labelled: np.ndarray, split: np.ndarray, labels: np.ndarray, config: ProbeConfig):
    """(train, val, test, carved) rows of the linear probe; val carved from train if absent."""
    train = labelled[split[labelled] == "train"]
    val = labelled[split[labelled] == "val"]
    test = labelled[split[labelled] == "test"]
    if len(train) < 2 or len(test) == 0:
        raise UserError(
            f"the linear probe needs labelled train and test images; found {len(train)} train "
            f"and {len(test)} test"
        )
    carved = len(val) == 0
    if carved:
        train, val = split_train_val(train, labels[train], config.val_fraction, config.seed)
    return np.sort(train), np.sort(val), test, carved


def linear_probe_score(
    features: np.ndarray,
    labels: np.ndarray,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray, bool],
    n_classes: int,
    config: ProbeConfig,
) -> ProbeScore:
    """Train the sweep on train, choose on val, score test once."""
    train, val, test, carved = rows
    result = fit_linear_probe(
        features[train],
        labels[train],
        features[val],
        labels[val],
        features[test],
        config,
        n_classes=n_classes,
    )
    truth = labels[test]
    return ProbeScore(
        f1=macro_f1(truth, result.test_prediction),
        accuracy=accuracy(truth, result.test_prediction),
        lr=result.lr,
        val_f1=result.val_score,
        n_train=len(train),
        n_val=len(val),
        n_test=len(test),
        carved_val=carved,
    )
