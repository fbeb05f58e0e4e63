"""Evaluation measures: the probe sweep vs scikit-learn, the CHAMMI 1-NN vs MorphEm's
``evaluate``, shard reading vs one file per image."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from bench.harness import Row, interleaved

# CHAMMI's sizes (rows, Train rows; docs/paper.md section 3) and its label / group structure:
# the leave-one-group-out task holds labels of its own, grouped by cell_type / Plate
CHAMMI_SIZES = {"Allen": (65103, 31060), "HPA": (66936, 32725), "CP": (88245, 36360)}
CHAMMI_TASKS = {
    "Allen": ["Task_one", "Task_two"],
    "HPA": ["Task_one", "Task_two", "Task_three"],
    "CP": ["Task_one", "Task_two", "Task_three", "Task_four"],
}
GROUPED = {"HPA": ("Task_three", "cell_type", 3, 3), "CP": ("Task_four", "Plate", 4, 3)}
N_TRAIN_LABELS = {"Allen": 6, "HPA": 4, "CP": 4}


def _gaussian_classes(rng, labels: np.ndarray, n_features: int, spread: float) -> np.ndarray:
    """float32 features: one random centre per label (norm ``spread``) + unit noise."""
    centres = rng.standard_normal((labels.max() + 1, n_features))
    centres *= spread / np.linalg.norm(centres, axis=1, keepdims=True)
    return (centres[labels] + rng.standard_normal((len(labels), n_features))).astype(np.float32)


def chammi_like(root: Path, features_dir: Path, n_features: int, scale: float, seed: int = 0):
    """CHAMMI-shaped metadata (``enriched_meta.csv`` per dataset) and float32 features."""
    rng = np.random.default_rng(seed)
    for dataset, (n_rows, n_train) in CHAMMI_SIZES.items():
        n_rows, n_train = int(n_rows * scale), int(n_train * scale)
        tasks = CHAMMI_TASKS[dataset]
        split = np.array(["Train"] * n_train + list(rng.choice(tasks, n_rows - n_train)))
        rng.shuffle(split)
        n_labels = N_TRAIN_LABELS[dataset]
        labels = rng.integers(0, n_labels, n_rows)
        meta = pd.DataFrame({"train_test_split": split})
        for task in tasks:
            meta[task] = split == task
        if dataset in GROUPED:
            task, column, n_groups, n_new = GROUPED[dataset]
            in_task = split == task
            labels[in_task] = n_labels + rng.integers(0, n_new, int(in_task.sum()))
            meta[column] = [f"{column}-{g}" for g in rng.integers(0, n_groups, n_rows)]
        meta["Label"] = [f"label-{i}" for i in labels]
        meta["file_path"] = [f"{dataset}/crops/{i}.png" for i in range(n_rows)]
        (root / dataset).mkdir(parents=True, exist_ok=True)
        meta.to_csv(root / dataset / "enriched_meta.csv", index=False)
        (features_dir / dataset).mkdir(parents=True, exist_ok=True)
        np.save(
            features_dir / dataset / "features.npy",
            _gaussian_classes(rng, labels, n_features, spread=1.5),
        )


def knn_vs_morphem(repeats: int, n_features: int = 384, scale: float = 1.0) -> Row:
    """``eval-chammi`` (load + score the three datasets) vs MorphEm's evaluate on each."""
    from bench import morphem_reference
    from channel_ssl.eval.eval_chammi import LEAVE_ONE_OUT, evaluate_chammi, load_chammi_features

    with tempfile.TemporaryDirectory(prefix="bench-knn-") as tmp:
        root, feats = Path(tmp) / "CHAMMI", Path(tmp) / "features"
        chammi_like(root, feats, n_features, scale)

        def ours():
            features = load_chammi_features(root, feats, "features.npy")
            return evaluate_chammi(root, features)

        def reference():
            out = {}
            with contextlib.redirect_stdout(io.StringIO()):
                for dataset, leave_out in LEAVE_ONE_OUT.items():
                    task, column = leave_out if leave_out else (None, None)
                    out[dataset] = morphem_reference.evaluate(
                        feats / dataset / "features.npy",
                        root / dataset / "enriched_meta.csv",
                        task,
                        column,
                        knn_metric="cosine",
                    )
            return out

        timing, scores, theirs = interleaved(ours, reference, repeats, warmup=False)
    identical = all(
        row.accuracy == theirs[row.dataset]["accuracies"][i]
        and row.f1_score_macro == theirs[row.dataset]["f1scores_macro"][i]
        for dataset, group in scores.groupby("dataset", sort=False)
        for i, row in enumerate(group.itertuples())
    ) and len(scores) == sum(len(t["tasks"]) for t in theirs.values())
    rows = sum(int(n * scale) for n, _ in CHAMMI_SIZES.values())
    return Row(
        f"CHAMMI 1-NN vs MorphEm evaluate(knn, cosine), CHAMMI-sized metadata "
        f"({rows:,} rows), {n_features}-d",
        timing,
        "speedup",
        1.5,
        extra_ok=identical,
        notes=("every task's accuracy and F1 bit-identical" if identical else "SCORES DIFFER"),
    )


def probe_vs_sklearn(
    repeats: int, n_train: int, n_val: int, n_features: int, n_classes: int = 10
) -> Row:
    """The 14-lr sweep (train + choose on validation) vs 14 scikit-learn LogisticRegression
    fits (lbfgs, C log-spaced over [1e-4, 1e2]) on the same standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from channel_ssl.eval.linear_probe import ProbeConfig, select_on_validation, train_probes

    rng = np.random.default_rng(0)
    labels = rng.integers(0, n_classes, n_train + n_val)
    # Gaussian classes: centres of norm 2 in all dimensions, unit noise (neither probe
    # separates them perfectly)
    x = _gaussian_classes(rng, labels, n_features, spread=2.0)
    x_train, y_train, x_val, y_val = x[:n_train], labels[:n_train], x[n_train:], labels[n_train:]
    config = ProbeConfig()

    def ours():
        probes = train_probes(x_train, y_train, n_classes, config)
        scores, best = select_on_validation(probes, x_val, y_val)
        return float(scores[best])

    def reference():
        mean, std = x_train.mean(0), x_train.std(0)
        xt, xv = (x_train - mean) / std, (x_val - mean) / std
        best = 0.0
        for c in np.logspace(-4, 2, config.n_classifiers):
            model = LogisticRegression(C=c, max_iter=100).fit(xt, y_train)
            pred = model.predict(xv)
            best = max(best, f1_score(y_val, pred, labels=np.unique(y_val), average="macro"))
        return float(best)

    timing, ours_f1, sklearn_f1 = interleaved(ours, reference, repeats, warmup=False)
    gap = 100 * (ours_f1 - sklearn_f1)
    return Row(
        f"14-lr probe sweep vs 14 scikit-learn LogisticRegression fits, {n_train:,} x "
        f"{n_features:,} (+ {n_val:,} val), {n_classes} classes",
        timing,
        "speedup",
        10.0,
        extra_ok=gap >= -0.5,
        notes=f"best val F1 {100 * ours_f1:.1f} vs {100 * sklearn_f1:.1f} ({gap:+.1f} pt, "
        "target >= -0.5)",
    )


def shards_vs_files(repeats: int, n_images: int = 2000, shape=(5, 96, 96)) -> Row:
    """Reading every image, in a shuffled order, from shards (``ShardStore``) vs from one
    ``.npy`` file per image."""
    from channel_ssl.data.shards import ShardStore, ShardWriter

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        shard_dir, file_dir = Path(tmp) / "shards", Path(tmp) / "files"
        file_dir.mkdir()
        writer = ShardWriter(shard_dir, shard_size=500)
        where = []
        for i in range(n_images):
            image = rng.integers(0, 256, shape, dtype=np.uint8)
            where.append(writer.add(image))
            np.save(file_dir / f"{i}.npy", image)
        writer.close()
        order = rng.permutation(n_images)

        def ours():
            store = ShardStore(shard_dir)
            return sum(int(store.get(*where[i])[0, 0, 0]) for i in order)

        def reference():
            return sum(int(np.load(file_dir / f"{i}.npy")[0, 0, 0]) for i in order)

        timing, a, b = interleaved(ours, reference, repeats)
    return Row(
        f"shard reading vs per-file reading, {n_images:,} images {shape}, shuffled order",
        timing,
        "speedup",
        1.0,
        extra_ok=a == b,
        notes="same pixels read" if a == b else "PIXELS DIFFER",
    )
