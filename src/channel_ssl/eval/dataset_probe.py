"""Linear probe of one task of a non-CHAMMI evaluation dataset (tables 1, 2, 3, 9, 10, 11).

``channel-ssl probe-dataset --features F.npy --manifest M.parquet --task TASK --column NAME
--out scores.csv [--channels K] [--columns-map CLASS=NAME ...] [--n-classifiers 14 --lr-min 1e-4
--lr-max 1 --epochs E --batch-size B --weight-decay W --val-fraction 0.1 --seed 0 --threads T]``

Inputs: ``F.npy`` float (N, F) features whose row i is the image whose manifest ``row`` is i
(what ``channel-ssl extract`` writes); the manifest must hold exactly N rows numbered 0..N-1.

Tasks (targets from the manifest written by the source's reader):

============================  =====================================  ==========================
task                          target                                 reported metric
============================  =====================================  ==========================
``hpa_fov_protein``           multi-hot over the 28 HPA localisations multi-label macro F1
                              in ``factors.protein_location`` (other
                              names ignored; rows with none dropped)
``hpa_fov_cell_type``         ``factors.cell_type``                  macro F1
``wtc_cell_cycle``            ``label`` (cell stage)                 macro F1
``jumpcp_compound``           ``label`` (target; DMSO = one class)   accuracy
``cyclops_localization``      ``label`` (16 classes)                 F1 of BUDTIP, CELLPERIPHERY,
                                                                     BUDNECK, ACTIN + macro F1
``meterml_methane``           multi-hot of the ``|``-joined ``label`` mAP
                              over the 6 classes (``''`` = negative,
                              kept)
============================  =====================================  ==========================

Single-label rows with an empty target are dropped. Macro F1 and multi-label F1 average over the
classes present in the test ground truth; mAP over classes with a positive in the test set.
"All" for Cyclops is the macro F1 over the 16 classes (the paper's "All" is not defined further).

Protocol: :func:`channel_ssl.eval.linear_probe.fit_linear_probe` (``n_classifiers`` learning
rates trained together; the best chosen on validation, never on test). Splits come from the
manifest ``split`` column (``train``/``val``/``test``); without ``val`` rows a stratified, seeded
validation split (``--val-fraction``) is carved from ``train``. For mAP the classifier is chosen
by validation mAP on the logits (the probes are trained by the same
:func:`~channel_ssl.eval.linear_probe.train_probes`).

Output CSV (the ``columns`` kind of ``render-table``): ``column, value`` (percent) — one row per
reported metric, named ``--column`` for single-metric tasks; for Cyclops ``[<column> ]<name>``
with the paper's table 2 names (``Budtip 1.5 %``, ``Cell periphery 1.9%``, ``Budneck 2.4%``,
``Actin 3.8%``, ``All``; override with ``--columns-map``) — plus provenance columns ``metric``,
``lr`` and ``val_score`` of the chosen classifier.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from channel_ssl.atomic import write_table
from channel_ssl.data.shards import load_manifest
from channel_ssl.errors import UserError
from channel_ssl.eval.linear_probe import (
    ProbeConfig,
    add_probe_arguments,
    fit_linear_probe,
    probe_config_from_args,
    split_train_val,
    train_probes,
)
from channel_ssl.eval.metrics import (
    accuracy,
    macro_f1,
    mean_average_precision,
    multilabel_present_f1,
    per_class_f1,
)
from channel_ssl.npy import load_npy
from channel_ssl.provenance import StepIO
from channel_ssl.step_io import manifest_file

log = logging.getLogger("channel_ssl.eval.dataset_probe")

OUTPUT_COLUMNS = ["column", "value", "metric", "lr", "val_score"]
SPLITS = ("train", "val", "test")

# the four rarest Cyclops classes with the column names of the paper's table 2, then "All"
CYCLOPS_COLUMNS = {
    "BUDTIP": "Budtip 1.5 %",
    "CELLPERIPHERY": "Cell periphery 1.9%",
    "BUDNECK": "Budneck 2.4%",
    "ACTIN": "Actin 3.8%",
    "All": "All",
}


def _hpa_localisations() -> tuple[str, ...]:
    from channel_ssl.data.readers.hpa import LOCALISATIONS

    return LOCALISATIONS


def _meterml_classes() -> tuple[str, ...]:
    from channel_ssl.data.readers.meterml import CLASSES

    return CLASSES


def _factor(name: str) -> Callable[[dict, pd.Series], object]:
    return lambda factors, row: factors.get(name)


def _label(factors: dict, row: pd.Series) -> str:
    return row["label"]


def _protein_locations(factors: dict, row: pd.Series) -> list[str]:
    value = factors.get("protein_location") or []
    if isinstance(value, str):  # tolerate a '|'-joined string
        value = [v for v in value.split("|") if v]
    return [str(v).lower() for v in value]


def _label_list(factors: dict, row: pd.Series) -> list[str]:
    return [v for v in str(row["label"]).split("|") if v]


@dataclass(frozen=True)
class Task:
    """One evaluation task: where its target comes from and how it is scored.

    ``target(factors, row)`` gives a class name (single-label; empty/None = unlabelled) or a list
    of class names (multi-label). ``vocabulary()`` is the fixed class order of multi-label tasks.
    """

    name: str
    target: Callable[[dict, pd.Series], object]
    metric: str  # accuracy | macro_f1 | per_class_f1 | multilabel_f1 | map
    vocabulary: Callable[[], tuple[str, ...]] | None = None
    drop_empty: bool = True
    report: dict[str, str] = field(default_factory=dict)

    @property
    def multilabel(self) -> bool:
        return self.vocabulary is not None


TASKS: dict[str, Task] = {
    "hpa_fov_protein": Task(
        "hpa_fov_protein", _protein_locations, "multilabel_f1", _hpa_localisations
    ),
    "hpa_fov_cell_type": Task("hpa_fov_cell_type", _factor("cell_type"), "macro_f1"),
    "wtc_cell_cycle": Task("wtc_cell_cycle", _label, "macro_f1"),
    "jumpcp_compound": Task("jumpcp_compound", _label, "accuracy"),
    "cyclops_localization": Task(
        "cyclops_localization", _label, "per_class_f1", report=CYCLOPS_COLUMNS
    ),
    "meterml_methane": Task(
        "meterml_methane", _label_list, "map", _meterml_classes, drop_empty=False
    ),
}


@dataclass
class TaskData:
    """Features, targets and split of the rows a task uses.

    ``x`` (n, F) float32; ``y`` (n,) int class ids or (n, C) 0/1; ``split`` (n,) names;
    ``classes`` the class names of the ids / columns.
    """

    x: np.ndarray
    y: np.ndarray
    split: np.ndarray
    classes: tuple[str, ...]
    positions: np.ndarray | None = None  # (n,) manifest positions (the augmented protocol)


def load_features(features_path: str, manifest: pd.DataFrame, manifest_path: str) -> np.ndarray:
    """(N, F) features reordered to the manifest's row order; checks the row count and numbering."""
    path = Path(features_path)
    if not path.exists():
        raise FileNotFoundError(f"feature file {path} does not exist")
    feats = load_npy(path, "feature file", mmap_mode="r")
    if feats.ndim != 2:
        raise UserError(
            f"feature file {path} must be 2-D (n_rows, n_features), got shape {feats.shape}"
        )
    if feats.shape[0] != len(manifest):
        raise UserError(
            f"feature file {path} has {feats.shape[0]} rows but manifest {manifest_path} has "
            f"{len(manifest)} rows; features must be extracted from this manifest"
        )
    rows = manifest["row"].to_numpy(dtype=np.int64)
    if not np.array_equal(np.sort(rows), np.arange(len(manifest))):
        raise UserError(
            f"manifest {manifest_path}: 'row' values are not exactly 0..{len(manifest) - 1}"
        )
    x = np.asarray(feats[rows], dtype=np.float32)
    if not np.isfinite(x).all():
        raise UserError(f"feature file {path} contains NaN or inf")
    return x


def task_data(task: Task, manifest: pd.DataFrame, x: np.ndarray, manifest_path: str) -> TaskData:
    """Targets of ``task`` for every manifest row; unlabelled rows dropped."""
    targets = []
    for i, row in manifest.iterrows():
        try:
            factors = json.loads(row["factors"]) if row["factors"] else {}
        except json.JSONDecodeError as exc:
            raise UserError(
                f"manifest {manifest_path} row {i}: factors is not JSON ({exc})"
            ) from exc
        targets.append(task.target(factors, row))
    split = manifest["split"].astype(str).to_numpy()
    if task.multilabel:
        vocabulary = task.vocabulary()
        index = {name.lower(): k for k, name in enumerate(vocabulary)}
        y = np.zeros((len(targets), len(vocabulary)), dtype=np.int8)
        for i, names in enumerate(targets):
            for name in names or []:
                k = index.get(str(name).lower())
                if k is not None:  # names outside the vocabulary (e.g. HPA 'vesicles') are ignored
                    y[i, k] = 1
        keep = y.any(axis=1) if task.drop_empty else np.ones(len(y), bool)
        data = TaskData(x[keep], y[keep], split[keep], tuple(vocabulary), np.flatnonzero(keep))
    else:
        names = np.array(["" if t is None else str(t) for t in targets], dtype=object)
        keep = names != ""
        classes = tuple(sorted(set(names[keep])))
        class_id = {name: k for k, name in enumerate(classes)}
        ids = np.array([class_id[n] for n in names[keep]], dtype=np.int64)
        data = TaskData(x[keep], ids, split[keep], classes, np.flatnonzero(keep))
    dropped = int((~keep).sum())
    if dropped:
        log.info("%s: %d row(s) without a label dropped", task.name, dropped)
    if len(data.y) == 0:
        raise UserError(f"manifest {manifest_path} has no labelled rows for task {task.name}")
    unknown = sorted(set(data.split) - set(SPLITS))
    if unknown:
        raise UserError(f"manifest {manifest_path}: split value(s) {unknown} not in {list(SPLITS)}")
    return data


def split_rows(
    data: TaskData, config: ProbeConfig, manifest_path: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices of train, val and test; val carved from train (stratified) if absent."""
    train = np.flatnonzero(data.split == "train")
    val = np.flatnonzero(data.split == "val")
    test = np.flatnonzero(data.split == "test")
    if len(train) == 0 or len(test) == 0:
        raise UserError(
            f"manifest {manifest_path}: task needs train and test rows, has {len(train)} and {len(test)}"
        )
    if len(val) == 0:
        strata = (
            np.array(["".join(map(str, r)) for r in data.y[train]])
            if data.y.ndim == 2
            else data.y[train]
        )
        train, val = split_train_val(train, strata, config.val_fraction, config.seed)
        log.info(
            "no val split: carved %d validation rows from %d train rows",
            len(val),
            len(train) + len(val),
        )
    return np.sort(train), np.sort(val), test


def _fit_by_map(
    data: TaskData, train, val, test, config: ProbeConfig
) -> tuple[np.ndarray, float, float]:
    """Probes chosen by validation mAP; returns (test logits (n_test, C), lr, val mAP)."""
    probes = train_probes(
        data.x[train], data.y[train], data.y.shape[1], config, multilabel=True,
        positions=None if data.positions is None else data.positions[train],
    )  # fmt: skip
    val_logits = probes.logits(data.x[val]).numpy()
    val_scores = np.array([mean_average_precision(data.y[val], logits) for logits in val_logits])
    best = int(np.argmax(val_scores))
    log.info(
        "val mAP per lr: %s; chosen lr=%.3g", np.round(val_scores, 4).tolist(), probes.lrs[best]
    )
    return (
        probes.logits(data.x[test]).numpy()[best],
        float(probes.lrs[best]),
        float(val_scores[best]),
    )


def score_task(
    task: Task,
    data: TaskData,
    config: ProbeConfig,
    column: str,
    manifest_path: str,
    columns_map: dict | None = None,
) -> pd.DataFrame:
    """Train, choose and score; returns the output table (OUTPUT_COLUMNS), values in percent."""
    train, val, test = split_rows(data, config, manifest_path)
    log.info(
        "%s: %d train, %d val, %d test rows, %d classes",
        task.name,
        len(train),
        len(val),
        len(test),
        len(data.classes),
    )
    y_test = data.y[test]
    if task.metric == "map":
        logits, lr, val_score = _fit_by_map(data, train, val, test, config)
        values = {column: mean_average_precision(y_test, logits)}
    else:
        result = fit_linear_probe(
            data.x[train], data.y[train], data.x[val], data.y[val], data.x[test], config,
            n_classes=len(data.classes), multilabel=task.multilabel,
            positions_train=None if data.positions is None else data.positions[train],
        )  # fmt: skip
        lr, val_score, pred = result.lr, result.val_score, result.test_prediction
        if task.metric == "multilabel_f1":
            values = {column: multilabel_present_f1(y_test, pred)}
        elif task.metric == "macro_f1":
            values = {column: macro_f1(y_test, pred)}
        elif task.metric == "accuracy":
            values = {column: accuracy(y_test, pred)}
        elif task.metric == "per_class_f1":
            names = {**task.report, **(columns_map or {})}
            prefix = f"{column} " if column else ""
            values = {}
            for cls, name in names.items():
                if cls == "All":
                    continue
                if cls not in data.classes:
                    raise UserError(
                        f"manifest {manifest_path} has no class {cls!r} (classes: {list(data.classes)})"
                    )
                values[prefix + name] = per_class_f1(y_test, pred, [data.classes.index(cls)])[0]
            values[prefix + names.get("All", "All")] = macro_f1(y_test, pred)
        else:
            raise UserError(f"unknown metric {task.metric!r} of task {task.name}")
    for name, value in values.items():
        log.info("%s %s = %.2f %%", task.name, name, 100 * value)
    return pd.DataFrame(
        [
            {
                "column": k,
                "value": 100.0 * v,
                "metric": task.metric,
                "lr": lr,
                "val_score": val_score,
            }
            for k, v in values.items()
        ],
        columns=OUTPUT_COLUMNS,
    )


def probe_dataset(
    features_path: str,
    manifest_path: str,
    task_name: str,
    column: str,
    config: ProbeConfig,
    channels: int | None = None,
    columns_map: dict | None = None,
    trainer=None,
) -> pd.DataFrame:
    """Run one task end to end on files; returns the output table (not written). ``trainer``:
    the augmented protocol's (``eval/augmented_probe.py``), None for the features protocol."""
    task = TASKS.get(task_name)
    if task is None:
        raise UserError(f"unknown task {task_name!r}; known: {sorted(TASKS)}")
    manifest = load_manifest(manifest_path)
    if channels is not None:
        have = sorted(set(manifest["n_channels"].astype(int)))
        if have != [channels]:
            raise UserError(
                f"--channels {channels} but manifest {manifest_path} holds images with {have} channels; "
                "use the manifest of that channel view (e.g. jumpcp_5ch vs jumpcp)"
            )
    x = load_features(features_path, manifest, manifest_path)
    data = task_data(task, manifest, x, manifest_path)
    if trainer is not None:
        config = dataclasses.replace(config, trainer=trainer)
    return score_task(task, data, config, column, manifest_path, columns_map)


def parse_columns_map(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        cls, sep, name = item.partition("=")
        if not sep or not cls or not name:
            raise UserError(f"--columns-map {item!r}: expected CLASS=COLUMN NAME")
        out[cls] = name
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--features", required=True, help="(N, F) .npy; row i = manifest row i")
    parser.add_argument("--manifest", required=True, help="manifest.parquet of the dataset")
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument(
        "--column", default="", help="output column name (Cyclops: prefix of the per-class names)"
    )
    parser.add_argument("--out", required=True, help="score CSV to write (column,value,...)")
    parser.add_argument(
        "--channels", type=int, help="expected channels per image of the manifest (e.g. 5 or 8)"
    )
    parser.add_argument(
        "--columns-map", action="append", default=[], metavar="CLASS=NAME",
        help="Cyclops: output name of a reported class (or All)",
    )  # fmt: skip
    add_probe_arguments(parser)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto")


def run(args: argparse.Namespace) -> int:
    if TASKS[args.task].metric != "per_class_f1" and not args.column:
        raise UserError(f"--column is required for task {args.task}")
    config = probe_config_from_args(args, args.device)
    scores = probe_dataset(
        args.features,
        args.manifest,
        args.task,
        args.column,
        config,
        args.channels,
        parse_columns_map(args.columns_map),
    )
    write_table(args.out, scores)
    return 0


def step_io(args) -> StepIO:
    """What this step read and wrote, for its provenance record."""
    return StepIO(inputs=[args.features, manifest_file(args.manifest)], outputs=[args.out])
