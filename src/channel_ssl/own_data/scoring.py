"""Scoring of ``evaluate-features``: every feature set x label x protocol -> score rows."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from channel_ssl.errors import UserError
from channel_ssl.eval.linear_probe import ProbeConfig
from channel_ssl.own_data.dataset import Dataset
from channel_ssl.own_data.protocols import (
    Folds,
    ProbeScore,
    knn_folds,
    knn_scores,
    linear_probe_score,
    probe_rows,
)

log = logging.getLogger("channel_ssl.own_data.evaluate")

REFERENCE_RANDOM = "reference: random init"
REFERENCE_INTENSITY = "reference: intensity statistics"
SCORE_COLUMNS = ["model", "protocol", "k", "label", "metric", "value"]
METRICS = ("macro_f1", "accuracy")
MIN_PROBE_STEPS = 100  # fewer: a WARNING suggests more epochs / smaller batches


@dataclass
class Results:
    rows: list[dict] = field(default_factory=list)
    probes: dict[tuple[str, str], ProbeScore] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def warn(results: Results, message: str) -> None:
    log.warning("%s", message)
    results.warnings.append(message)


def encode(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(labelled rows, int labels (N,) with -1 for unlabelled, class names)."""
    classes = sorted(set(values.tolist()) - {""})
    lookup = {c: i for i, c in enumerate(classes)}
    encoded = np.array([lookup.get(v, -1) for v in values], dtype=np.int64)
    return np.flatnonzero(encoded >= 0), encoded, classes


def score_all(
    features: dict[str, np.ndarray],
    dataset: Dataset,
    ks: list[int],
    leave_group_out: bool,
    config: ProbeConfig,
    results: Results,
) -> None:
    """Every model x label x protocol -> ``results.rows`` (fractions turned into percent)."""
    for column, values in dataset.labels.items():
        labelled, encoded, classes = encode(values)
        if len(classes) < 2:
            raise UserError(
                f"label column {column!r} has {len(classes)} class(es) {classes}; need at least 2"
            )
        folds: Folds = knn_folds(labelled, dataset.split, dataset.groups, leave_group_out)
        rows = probe_rows(labelled, dataset.split, encoded, config)
        n_train = len(rows[0])
        steps = config.epochs * math.ceil(n_train / min(config.batch_size, n_train))
        if steps < MIN_PROBE_STEPS:
            warn(
                results,
                f"label {column}: the linear probe makes only {steps} optimiser steps "
                f"({config.epochs} epochs of {n_train} train images in batches of "
                f"{config.batch_size}); on a dataset this small, more (e.g. --epochs 100 "
                "--probe-batch-size 64) usually scores higher",
            )
        for name, x in features.items():
            z_score = name == REFERENCE_INTENSITY
            log.info("%s, label %s: k-NN (%s) and linear probe", name, column, folds.protocol)
            for k, (f1, acc) in knn_scores(x, encoded, folds, ks, len(classes), z_score).items():
                for metric, value in zip(METRICS, (f1, acc), strict=True):
                    results.rows.append(
                        {
                            "model": name,
                            "protocol": folds.protocol,
                            "k": k,
                            "label": column,
                            "metric": metric,
                            "value": 100.0 * value,
                        }
                    )
            probe = linear_probe_score(x, encoded, rows, len(classes), config)
            results.probes[(name, column)] = probe
            for metric, value in zip(METRICS, (probe.f1, probe.accuracy), strict=True):
                results.rows.append(
                    {
                        "model": name,
                        "protocol": "linear",
                        "k": None,
                        "label": column,
                        "metric": metric,
                        "value": 100.0 * value,
                    }
                )
