"""MorphEm's CHAMMI evaluation, ``evaluate(..., model_choice='knn', knn_metric='cosine')``,
restated exactly: the reference of the 1-NN benchmark.

MorphEm is not published on PyPI (``pip download morphem`` finds nothing), so this module
restates, statement for statement, the k-NN path of ``morphem/evaluation.py::evaluate`` and
``morphem/utils.py::FaissKNeighbors`` of github.com/broadinstitute/MorphEm at commit a5c3f38
(MIT License, Copyright (c) 2023 Broad Institute). Left out: the ``sgd`` classifier branch, the
GPU index and the module's plotting imports (umap, matplotlib, seaborn), none of which the
``knn`` / ``cosine`` / CPU path executes; the progress ``print`` calls are kept.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, f1_score


class FaissKNeighbors:
    """``morphem.utils.FaissKNeighbors`` (CPU index)."""

    def __init__(self, k, metric: str):
        self.index = None
        self.y = None
        self.k = k
        self.metric = metric
        assert metric in ["l2", "cosine"], (
            f"{metric} is not a valid metric. Choose from ['l2', 'cosine']"
        )

    def fit(self, X, y):
        import faiss

        if self.metric == "cosine":
            # L2-normalize the vectors before computing dot product
            X = X / np.linalg.norm(X, axis=-1, keepdims=True)
            self.index = faiss.IndexFlatIP(X.shape[1])
        else:
            self.index = faiss.IndexFlatL2(X.shape[1])
        self.index.add(X.astype(np.float32))
        self.y = y

    def predict(self, X_test):
        if self.metric == "cosine":
            X_test = X_test / np.linalg.norm(X_test, axis=-1, keepdims=True)
        distances, indices = self.index.search(X_test.astype(np.float32), k=self.k)
        votes = self.y[indices]
        predictions = np.array([np.argmax(np.bincount(x)) for x in votes])
        return predictions


def evaluate(features_path, df_path, leave_out, leaveout_label, knn_metric: str = "cosine"):
    """``morphem.evaluation.evaluate`` with ``model_choice='knn'``, ``use_gpu=False``."""
    print("Running classification pipeline...")
    features = np.load(features_path)
    df = pd.read_csv(df_path)

    tasks = list(df["train_test_split"].unique())
    tasks.remove("Train")
    mapper = {"Task_one": 1, "Task_two": 2, "Task_three": 3, "Task_four": 4}
    tasks = sorted(tasks, key=lambda x: mapper[x])
    if leave_out is not None:
        leaveout_ind = tasks.index(leave_out)

    train_indices = np.where(df["train_test_split"] == "Train")[0]
    all_test_indices = [np.where(df[task])[0] for task in tasks]

    target_value = list(df["Label"].unique())
    encoded_target = {}
    for i in range(len(target_value)):
        encoded_target[target_value[i]] = i
    df["encoded_label"] = df.Label.apply(lambda x: encoded_target[x])

    train_X = features[train_indices]
    test_Xs = [features[test_indices] for test_indices in all_test_indices]
    task_Ys = [df["encoded_label"].values for key in tasks]
    train_Ys = [task_Ys[task_ind][train_indices] for task_ind in range(len(tasks))]
    test_Ys = [
        task_Ys[task_ind][test_indices] for task_ind, test_indices in enumerate(all_test_indices)
    ]

    if leave_out is not None:
        df_takeout = df[df[leave_out]]
        groups = list(df_takeout[leaveout_label].unique())
        all_group_indices = [
            df_takeout[df_takeout[leaveout_label] == group].index.values for group in groups
        ]
        all_other_indices = [
            df_takeout[df_takeout[leaveout_label] != group].index.values for group in groups
        ]
        takeout_X = [features[group_indices] for group_indices in all_group_indices]
        rest_X = [
            features[np.concatenate((train_indices, other_indices), axis=None)]
            for other_indices in all_other_indices
        ]
        takeout_Y = [task_Ys[leaveout_ind][group_indices] for group_indices in all_group_indices]
        rest_Y = [
            task_Ys[leaveout_ind][np.concatenate((train_indices, other_indices), axis=None)]
            for other_indices in all_other_indices
        ]

    print("Train classifiers...")
    accuracies, f1scores_macro, reports_str, reports_dict = [], [], [], []
    for task_ind, task in enumerate(tasks):
        if task != leave_out:
            model = FaissKNeighbors(k=1, metric=knn_metric)
            model.fit(train_X, train_Ys[task_ind])
            predictions = model.predict(test_Xs[task_ind])
            ground_truth = test_Ys[task_ind]
        else:
            predictions, ground_truth = [], []
            for group_ind, _group in enumerate(groups):
                model = FaissKNeighbors(k=1, metric=knn_metric)
                model.fit(rest_X[group_ind], rest_Y[group_ind])
                predictions.append(model.predict(takeout_X[group_ind]))
                ground_truth.append(takeout_Y[group_ind])
            predictions = np.concatenate(predictions)
            ground_truth = np.concatenate(ground_truth)
        int_labels = np.unique(ground_truth)
        str_labels = [target_value[idx] for idx in int_labels]
        accuracy = np.mean(predictions == ground_truth)
        report_str = classification_report(
            ground_truth, predictions, labels=int_labels, target_names=str_labels
        )
        report_dict = classification_report(
            ground_truth, predictions, labels=int_labels, target_names=str_labels, output_dict=True
        )
        f1score_macro = f1_score(
            ground_truth, predictions, labels=np.unique(ground_truth), average="macro"
        )
        accuracies.append(accuracy)
        f1scores_macro.append(f1score_macro)
        reports_str.append(report_str)
        reports_dict.append(report_dict)
    return {
        "tasks": tasks,
        "accuracies": accuracies,
        "f1scores_macro": f1scores_macro,
        "reports_str": reports_str,
        "reports_dict": reports_dict,
        "encoded_target": encoded_target,
    }
