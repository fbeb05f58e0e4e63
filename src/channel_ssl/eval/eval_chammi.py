"""CHAMMI 1-NN evaluation, a drop-in for MorphEm's ``evaluate(..., model_choice='knn', knn_metric='cosine')``.

Inputs follow the CHAMMI reference layout: features at ``<features_dir>/{Allen,HPA,CP}/<name>.npy``
(float array ``(n_rows, F)``), rows aligned with ``<root>/{Allen,HPA,CP}/enriched_meta.csv``.

Protocol (identical to the reference, so the numbers are identical too):

- tasks = unique ``train_test_split`` values minus ``Train``, ordered Task_one .. Task_four;
  a task's rows are those whose boolean task column is true; the reference set is the Train rows;
- labels are encoded by order of first appearance of ``Label`` in the metadata;
- cosine 1-NN (computed in one similarity pass per task, ``eval/knn_search.py``, with the
  reference's faiss predictions): L2-normalise (in the features' dtype; rows whose norm would overflow or
  underflow are rescaled by their max-abs entry in float64 first, so features x1e37 or denormal
  ones score as the unscaled features; an all-zero or non-finite row has no direction and is an
  error naming the row), float32 faiss ``IndexFlatIP``, k = 1;
- HPA Task_three and CP Task_four are leave-one-group-out over ``cell_type`` / ``Plate``: for each
  group (order of first appearance among the task's rows) the reference set is Train + the task's
  rows of the other groups; predictions are concatenated group by group;
- per task: accuracy = mean(prediction == truth), macro F1 over the labels present in the truth.

Output: a score table with columns ``dataset, task, classifier, accuracy, f1_score_macro``
(fractions in [0, 1], one row per dataset and task); :func:`chammi_summary` turns it into the
paper's columns (percent).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, f1_score

from channel_ssl.atomic import write_json, write_table
from channel_ssl.errors import UserError
from channel_ssl.eval.knn_search import fold_predictions
from channel_ssl.npy import load_npy
from channel_ssl.step_io import chammi_scores

log = logging.getLogger("channel_ssl.eval.knn")

DATASETS = ("Allen", "HPA", "CP")
METADATA_NAME = "enriched_meta.csv"
TASK_ORDER = {"Task_one": 1, "Task_two": 2, "Task_three": 3, "Task_four": 4}
# dataset -> (leave-one-group-out task, grouping column), as in MorphEm's run_benchmark
LEAVE_ONE_OUT = {"Allen": None, "HPA": ("Task_three", "cell_type"), "CP": ("Task_four", "Plate")}
SCORE_COLUMNS = ["dataset", "task", "classifier", "accuracy", "f1_score_macro"]
# paper column names: dataset name in the paper and the OOD tasks averaged per dataset
PAPER_DATASET = {"Allen": "WTC", "HPA": "HPA", "CP": "CP"}
OOD_TASKS = {
    "Allen": ("Task_two",),
    "HPA": ("Task_two", "Task_three"),
    "CP": ("Task_two", "Task_three", "Task_four"),
}
TASKS_PER_DATASET = {"Allen": 2, "HPA": 3, "CP": 4}
SUMMARY_COLUMNS = ["Mean", "WTC", "HPA", "CP"] + [
    f"{PAPER_DATASET[d]} Task{i}" for d in DATASETS for i in range(1, TASKS_PER_DATASET[d] + 1)
]


# --------------------------------------------------------------------------- metadata


def _as_bool(series: pd.Series, column: str, path: str) -> np.ndarray:
    """A task column as a bool array; real files may hold ``True``/``False`` as strings."""
    if series.dtype == bool:
        return series.to_numpy()
    text = series.astype("string").str.strip().str.lower()
    mapping = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}
    bad = ~text.isin(list(mapping))
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(
            f"{path}: column {column!r} row {first} holds {series.iloc[first]!r}, expected True/False"
        )
    return text.map(mapping).to_numpy(dtype=bool)


def read_metadata(path: str | os.PathLike) -> pd.DataFrame:
    """Read one ``enriched_meta.csv`` (as the reference: ``pd.read_csv``); task columns become bool."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CHAMMI metadata {path} does not exist")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise UserError(f"CHAMMI metadata {path} is empty (a truncated copy?)") from None
    if df.empty:
        raise UserError(f"CHAMMI metadata {path} has a header but no rows (a truncated copy?)")
    for column in ("train_test_split", "Label"):
        if column not in df.columns:
            raise UserError(f"{path}: missing column {column!r}")
    for task in df["train_test_split"].unique():
        if task == "Train":
            continue
        if task not in TASK_ORDER:
            raise UserError(f"{path}: unknown train_test_split value {task!r}")
        if task not in df.columns:
            raise UserError(
                f"{path}: train_test_split names {task!r} but there is no {task!r} column"
            )
        df[task] = _as_bool(df[task], task, str(path))
    return df


@dataclass
class ChammiProtocol:
    """The evaluation folds of one CHAMMI dataset.

    Attributes:
        dataset: ``Allen``, ``HPA`` or ``CP``.
        tasks: task names in order Task_one .. Task_four.
        labels: (n_rows,) int label codes (order of first appearance of ``Label``).
        label_names: code -> label string.
        train_rows: (n_train,) indices of the Train rows.
        folds: task -> list of ``(group, reference_rows, query_rows)``; one fold with group ``None``
            for ordinary tasks, one per group for the leave-one-group-out task.
    """

    dataset: str
    tasks: list[str]
    labels: np.ndarray
    label_names: list[str]
    train_rows: np.ndarray
    folds: dict[str, list[tuple[object, np.ndarray, np.ndarray]]] = field(default_factory=dict)

    def iter_folds(self, task: str) -> Iterator[tuple[object, np.ndarray, np.ndarray]]:
        yield from self.folds[task]


def build_protocol(meta: pd.DataFrame, dataset: str, source: str = "<metadata>") -> ChammiProtocol:
    """Derive the tasks, label codes and folds of ``dataset`` from its metadata table."""
    if dataset not in LEAVE_ONE_OUT:
        raise UserError(f"unknown CHAMMI dataset {dataset!r}; expected one of {list(DATASETS)}")
    tasks = sorted(
        (t for t in meta["train_test_split"].unique() if t != "Train"), key=TASK_ORDER.get
    )
    names = list(pd.unique(meta["Label"]))
    codes = {name: i for i, name in enumerate(names)}
    labels = np.array([codes[v] for v in meta["Label"]], dtype=np.int64)
    train_rows = np.flatnonzero((meta["train_test_split"] == "Train").to_numpy())

    protocol = ChammiProtocol(dataset, tasks, labels, [str(n) for n in names], train_rows)
    leave_out = LEAVE_ONE_OUT[dataset]
    for task in tasks:
        in_task = meta[task].to_numpy(dtype=bool)
        if leave_out is None or task != leave_out[0]:
            protocol.folds[task] = [(None, train_rows, np.flatnonzero(in_task))]
            continue
        column = leave_out[1]
        if column not in meta.columns:
            raise UserError(f"{source}: leave-one-out task {task} needs column {column!r}")
        values = meta[column]
        if values[in_task].isna().any():
            row = int(np.flatnonzero(in_task & values.isna().to_numpy())[0])
            raise UserError(f"{source}: row {row} of {task} has no {column!r} value")
        folds = []
        for group in pd.unique(values[in_task]):
            is_group = (values == group).to_numpy()
            query = np.flatnonzero(in_task & is_group)
            others = np.flatnonzero(in_task & ~is_group)
            folds.append((group, np.concatenate([train_rows, others]), query))
        protocol.folds[task] = folds
    return protocol


# --------------------------------------------------------------------------- features


def check_features(
    features: np.ndarray, n_rows: int, features_path: str, metadata_path: str
) -> None:
    """Reject a feature array that is not 2-D, has the wrong row count or non-finite values."""
    if features.ndim != 2:
        raise UserError(
            f"features {features_path} have shape {features.shape}, expected (n_rows, F)"
        )
    if features.shape[0] != n_rows:
        raise UserError(
            f"features {features_path} have {features.shape[0]} rows but metadata {metadata_path} "
            f"has {n_rows} rows; feature rows must be aligned with the metadata rows"
        )
    if not np.issubdtype(features.dtype, np.floating):
        raise UserError(f"features {features_path} have dtype {features.dtype}, expected float")
    finite = np.isfinite(features).all(axis=1)
    if not finite.all():
        raise UserError(
            f"features {features_path} contain NaN or inf (first at row {int(np.flatnonzero(~finite)[0])})"
        )
    zero = ~features.any(axis=1)
    if zero.any():
        raise UserError(
            f"features {features_path} row {int(np.flatnonzero(zero)[0])} is all zeros; cosine similarity is undefined"
        )


def load_features(features_dir: str | os.PathLike, dataset: str, feature_file: str) -> np.ndarray:
    path = Path(features_dir) / dataset / feature_file
    if not path.exists():
        raise FileNotFoundError(f"feature file {path} does not exist")
    return load_npy(path, "feature file")


# --------------------------------------------------------------------------- 1-NN


def _l2_normalise(x: np.ndarray, source: str = "<features>") -> np.ndarray:
    """Rows scaled to unit L2 norm, in the features' dtype.

    Rows whose plain norm is finite and not tiny are divided by it exactly as the reference
    does (bit-identical on ordinary features). Rows whose sum of squares would overflow
    (entries ~1e19 and more in float32) or underflow (denormal entries) are first divided by
    their max-abs entry in float64, normalised there and cast back, so huge or tiny features
    give the same directions as their unscaled counterparts. Non-finite or all-zero rows are
    rejected with the row index.
    """
    finite = np.isfinite(x).all(axis=-1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise UserError(f"{source} row {row} holds NaN or inf; cosine similarity is undefined")
    with np.errstate(over="ignore", under="ignore"):
        norms = np.linalg.norm(x, axis=-1, keepdims=True)
    zero = ~x.any(axis=-1)
    if zero.any():
        row = int(np.flatnonzero(zero)[0])
        raise UserError(f"{source} row {row} is all zeros; cosine similarity is undefined")
    # a norm below sqrt(tiny) means some squares fell into the denormal range and lost digits
    unsafe = ~np.isfinite(norms[:, 0]) | (norms[:, 0] < np.sqrt(np.finfo(x.dtype).tiny))
    if not unsafe.any():
        return x / norms
    out = np.empty_like(x)
    safe = ~unsafe
    out[safe] = x[safe] / norms[safe]
    rows = x[unsafe].astype(np.float64)
    rows /= np.abs(rows).max(axis=-1, keepdims=True)
    rows /= np.linalg.norm(rows, axis=-1, keepdims=True)
    out[unsafe] = rows.astype(x.dtype)
    return out


def cosine_1nn(
    reference: np.ndarray, reference_labels: np.ndarray, queries: np.ndarray
) -> np.ndarray:
    """Label of each query's nearest reference row by cosine similarity.

    Args:
        reference: (R, F) reference features; reference_labels: (R,) int labels; queries: (Q, F).
    Returns:
        (Q,) predicted labels.
    """
    import faiss  # imported here: faiss is slow to import and only this path needs it

    if len(queries) == 0:
        return np.empty(0, dtype=reference_labels.dtype)
    ref = np.ascontiguousarray(_l2_normalise(reference, "reference features"), dtype=np.float32)
    index = faiss.IndexFlatIP(ref.shape[1])
    index.add(ref)
    query = np.ascontiguousarray(_l2_normalise(queries, "query features"), dtype=np.float32)
    _, nearest = index.search(query, 1)
    return reference_labels[nearest[:, 0]]


def task_scores(truth: np.ndarray, prediction: np.ndarray) -> tuple[float, float]:
    """(accuracy, macro F1 over the labels present in ``truth``)."""
    accuracy = float(np.mean(prediction == truth))
    f1 = float(
        f1_score(truth, prediction, labels=np.unique(truth), average="macro", zero_division=0)
    )
    return accuracy, f1


def evaluate_dataset(
    protocol: ChammiProtocol, features: np.ndarray, json_path: str | os.PathLike | None = None
) -> pd.DataFrame:
    """1-NN scores of every task of one dataset; optionally a MorphEm-style per-class report JSON."""
    rows = []
    reports: dict[str, object] = {
        "target_encoding": {n: i for i, n in enumerate(protocol.label_names)}
    }

    def normalised(rows: np.ndarray, what: str) -> np.ndarray:
        return np.ascontiguousarray(_l2_normalise(features[rows], what), dtype=np.float32)

    for task in protocol.tasks:
        folds = list(protocol.iter_folds(task))
        truths = [protocol.labels[query_rows] for _g, _r, query_rows in folds]
        # one similarity pass over all the task's folds; the reference's per-fold faiss search
        # where the folds are not the protocol's (same predictions either way)
        predictions = fold_predictions(folds, protocol.train_rows, protocol.labels, normalised)
        if predictions is None:
            predictions = [
                cosine_1nn(features[ref], protocol.labels[ref], features[query])
                for _g, ref, query in folds
            ]
        prediction, truth = np.concatenate(predictions), np.concatenate(truths)
        accuracy, f1 = task_scores(truth, prediction)
        log.info(
            "%s %s: accuracy=%.4f f1_macro=%.4f (n=%d)",
            protocol.dataset,
            task,
            accuracy,
            f1,
            len(truth),
        )
        rows.append(
            {
                "dataset": protocol.dataset,
                "task": task,
                "classifier": "knn",
                "accuracy": accuracy,
                "f1_score_macro": f1,
            }
        )
        if json_path is not None:
            present = np.unique(truth)
            reports[task] = classification_report(
                truth,
                prediction,
                labels=present,
                target_names=[protocol.label_names[i] for i in present],
                output_dict=True,
                zero_division=0,
            )
    if json_path is not None:
        write_json(json_path, reports)
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def evaluate_chammi(
    root: str | os.PathLike,
    features: dict[str, np.ndarray],
    json_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Score features of some or all CHAMMI datasets.

    Args:
        root: CHAMMI root holding ``{Allen,HPA,CP}/enriched_meta.csv``.
        features: dataset name -> (n_rows, F) features aligned with that dataset's metadata rows.
        json_dir: if given, write ``<dataset>_knn_cosine_results.json`` per-class reports there.
    Returns:
        score table (SCORE_COLUMNS), datasets in the order Allen, HPA, CP.
    """
    unknown = sorted(set(features) - set(DATASETS))
    if unknown:
        raise UserError(f"unknown CHAMMI dataset(s) {unknown}; expected some of {list(DATASETS)}")
    frames = []
    for dataset in DATASETS:
        if dataset not in features:
            continue
        meta_path = Path(root) / dataset / METADATA_NAME
        meta = read_metadata(meta_path)
        feats = np.asarray(features[dataset])
        check_features(feats, len(meta), f"<{dataset} features>", str(meta_path))
        protocol = build_protocol(meta, dataset, str(meta_path))
        json_path = (
            None if json_dir is None else Path(json_dir) / f"{dataset}_knn_cosine_results.json"
        )
        frames.append(evaluate_dataset(protocol, feats, json_path))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SCORE_COLUMNS)


def load_chammi_features(root, features_dir, feature_file: str) -> dict[str, np.ndarray]:
    """Load ``<features_dir>/<dataset>/<feature_file>`` for the three datasets, checked against the metadata."""
    out = {}
    for dataset in DATASETS:
        path = Path(features_dir) / dataset / feature_file
        meta_path = Path(root) / dataset / METADATA_NAME
        feats = load_features(features_dir, dataset, feature_file)
        n_rows = len(read_metadata(meta_path))
        check_features(feats, n_rows, str(path), str(meta_path))
        out[dataset] = feats
    return out


# --------------------------------------------------------------------------- summary


def chammi_summary(
    scores: pd.DataFrame, metric: str = "f1_score_macro", datasets: tuple[str, ...] = DATASETS
) -> dict[str, float]:
    """The paper's CHAMMI columns (percent) from a score table.

    Returns keys ``Mean, WTC, HPA, CP`` (OOD means: WTC = Task2, HPA = mean(T2, T3),
    CP = mean(T2, T3, T4); Mean = their mean) and per-task ``WTC Task1 .. CP Task4``.
    ``datasets``: score only these (e.g. a fixed-channel model that reads one channel count);
    Mean is then the mean over them.
    """
    missing_cols = [c for c in ("dataset", "task", metric) if c not in scores.columns]
    if missing_cols:
        raise UserError(f"score table lacks column(s) {missing_cols}")
    dup = scores.duplicated(["dataset", "task"])
    if dup.any():
        row = scores[dup].iloc[0]
        raise UserError(f"score table has more than one row for {row['dataset']} {row['task']}")
    value = {(r.dataset, r.task): 100.0 * float(getattr(r, metric)) for r in scores.itertuples()}
    out: dict[str, float] = {}
    for dataset in datasets:
        for i, task in enumerate(
            sorted(TASK_ORDER, key=TASK_ORDER.get)[: TASKS_PER_DATASET[dataset]]
        ):
            if (dataset, task) not in value:
                raise UserError(f"score table has no row for dataset {dataset} task {task}")
            out[f"{PAPER_DATASET[dataset]} Task{i + 1}"] = value[(dataset, task)]
        out[PAPER_DATASET[dataset]] = float(
            np.mean([value[(dataset, t)] for t in OOD_TASKS[dataset]])
        )
    out["Mean"] = float(np.mean([out[PAPER_DATASET[d]] for d in datasets]))
    return {k: out[k] for k in SUMMARY_COLUMNS if k in out}


# --------------------------------------------------------------------------- CLI


def add_chammi_io_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by the CHAMMI evaluations (the reference's own layout)."""
    parser.add_argument(
        "--root", required=True, help="CHAMMI root with {Allen,HPA,CP}/enriched_meta.csv"
    )
    parser.add_argument(
        "--features-dir", required=True, help="directory with {Allen,HPA,CP}/<feature-file>"
    )
    parser.add_argument("--feature-file", required=True, help="feature file name, e.g. cls1.npy")
    parser.add_argument("--out", required=True, help="score CSV to write")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_chammi_io_arguments(parser)
    parser.add_argument("--json-dir", help="also write MorphEm-style per-class report JSONs here")


def run(args: argparse.Namespace) -> int:
    features = load_chammi_features(args.root, args.features_dir, args.feature_file)
    scores = evaluate_chammi(args.root, features, json_dir=args.json_dir)
    write_table(args.out, scores)
    summary = chammi_summary(scores)
    log.info(
        "CHAMMI 1-NN summary (percent): %s", ", ".join(f"{k}={v:.1f}" for k, v in summary.items())
    )
    return 0


# the CHAMMI features of one recipe and CHAMMI's metadata -> one score file
step_io = chammi_scores
