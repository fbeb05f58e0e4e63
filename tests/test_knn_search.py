"""The one-pass 1-NN (eval/knn_search.py) gives the per-fold faiss search's predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd

from channel_ssl.eval.eval_chammi import _l2_normalise, build_protocol, cosine_1nn, task_scores
from channel_ssl.eval.knn_search import decision_margin, fold_predictions, nearest_rows


def _cp_like(rng, n_train=300, n_task=250, n_plates=6, dim=24):
    """CP-like metadata (Task_four leave-one-plate-out, 40 rows per other task) and features
    with exact duplicates and near-ties across folds."""
    splits = ["Train"] * n_train + ["Task_one"] * 40 + ["Task_two"] * 40 + ["Task_four"] * n_task
    rng.shuffle(splits)
    meta = pd.DataFrame({"train_test_split": splits})
    meta["Label"] = rng.choice(["DMSO", "BRD-A", "BRD-B", "BRD-X"], size=len(meta))
    for task in ("Task_one", "Task_two", "Task_four"):
        meta[task] = meta["train_test_split"] == task
    # plate sizes from 3 to dozens: folds below and above faiss's BLAS threshold
    weights = np.arange(1, n_plates + 1, dtype=float) ** 2
    meta["Plate"] = rng.choice(
        [f"P{i}" for i in range(n_plates)], p=weights / weights.sum(), size=len(meta)
    )
    features = rng.standard_normal((len(meta), dim)).astype(np.float32)
    pairs = rng.permutation(len(meta))[:160].reshape(2, 2, 40)
    features[pairs[0, 0]] = features[pairs[0, 1]]  # exact duplicates
    jitter = 1e-6 * rng.standard_normal((40, dim)).astype(np.float32)
    features[pairs[1, 0]] = features[pairs[1, 1]] + jitter  # near-ties
    return meta, features


def _per_fold(protocol, features, folds):
    return [cosine_1nn(features[ref], protocol.labels[ref], features[q]) for _g, ref, q in folds]


def test_one_pass_predictions_and_scores_equal_the_per_fold_search():
    rng = np.random.default_rng(3)
    meta, features = _cp_like(rng)
    protocol = build_protocol(meta, "CP")

    def normalised(rows, what):
        return np.ascontiguousarray(_l2_normalise(features[rows], what), dtype=np.float32)

    for task in protocol.tasks:
        folds = list(protocol.iter_folds(task))
        ours = fold_predictions(folds, protocol.train_rows, protocol.labels, normalised)
        assert ours is not None
        theirs = _per_fold(protocol, features, folds)
        assert len(ours) == len(folds) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a, b)
        truth = np.concatenate([protocol.labels[q] for _g, _r, q in folds])
        assert task_scores(truth, np.concatenate(ours)) == task_scores(
            truth, np.concatenate(theirs)
        )
    assert len(list(protocol.iter_folds("Task_four"))) >= 5


def test_masked_rows_are_never_chosen_and_near_ties_are_flagged():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((50, 8)).astype(np.float32)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    queries = reference[:10].copy()
    groups = np.arange(50) % 5
    best, near_tie = nearest_rows(reference, queries, groups, groups[:10])
    assert (groups[best] != groups[:10]).all()  # itself (similarity 1) is masked
    reference[20] = reference[30]  # an exact tie with a later row: first maximum, flagged
    best, near_tie = nearest_rows(reference, reference[20:21] * 1.0)
    assert best[0] == 20 and near_tie[0]
    assert decision_margin(384) < 1e-4


def test_tiles_give_the_whole_product_answer():
    """Any tiling of the reference rows: the same first maximum and the same near-ties as one
    (query x all rows) product, with ties inside a tile and across tiles, and masked tiles."""
    rng = np.random.default_rng(5)
    reference = rng.standard_normal((37, 6)).astype(np.float32)
    reference[[9, 21, 33]] = reference[4]  # exact ties: within the first tile and across
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    queries = np.concatenate([reference[[4, 0, 21]], rng.standard_normal((20, 6))])
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    groups = np.repeat(np.arange(4), [5, 12, 10, 10])
    query_groups = rng.integers(0, 4, len(queries))
    for masked in (False, True):
        args = (groups, query_groups) if masked else ()
        sims = queries @ reference.T
        if masked:
            sims[query_groups[:, None] == groups[None, :]] = -np.inf
        first_max = sims.argmax(axis=1)  # numpy: the first maximum
        whole = nearest_rows(reference, queries, *args, reference_block=10_000)
        np.testing.assert_array_equal(whole[0], first_max)
        for reference_block in (1, 2, 5, 11):
            tiled = nearest_rows(
                reference, queries, *args, block=7, reference_block=reference_block
            )
            np.testing.assert_array_equal(tiled[0], whole[0])
            np.testing.assert_array_equal(tiled[1], whole[1])
        assert whole[1][0]  # rows 4, 9, 21, 33 tie, one group per row: >= 3 stay visible


def test_folds_not_of_the_protocol_shape_fall_back():
    rng = np.random.default_rng(1)
    meta, features = _cp_like(rng)
    protocol = build_protocol(meta, "CP")
    _g, ref, query = protocol.folds["Task_one"][0]
    odd = [(None, ref[::-1], query)]  # another reference order: ties would resolve otherwise
    assert fold_predictions(odd, protocol.train_rows, protocol.labels, lambda r, w: r) is None
