"""Cosine 1-NN of all of a task's queries in one similarity pass, with the reference's answers.

MorphEm's ``evaluate(knn, cosine)`` searches a faiss ``IndexFlatIP`` once per task and, for the
leave-one-group-out tasks, once per group against Train + the other groups. Here every query
of a task is scored against one reference matrix (Train followed by the task's rows in row
order) in blocks of a torch matrix product, and the rows a fold leaves out (the query's own
group) are masked to ``-inf``; the rows a fold keeps are in the fold's own order, so the first
maximum is the fold's first maximum.

The similarities of this product and of faiss's differ in the last bits (different summation
orders). Both are float32 dot products of unit vectors of length F, so each is within
``gamma_F = F u / (1 - F u)`` (u = 2^-24) of the exact value; a query whose best similarity
leads every other unmasked one by more than ``4 gamma_F`` therefore has the same nearest row
under any summation order. The few queries with a smaller lead (near-ties, exact duplicates)
are searched again by faiss exactly as the reference searches them, so the predictions, and
the scores, are the reference's bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# the similarity product in tiles of (BLOCK queries x REFERENCE_BLOCK rows), 16 MiB of float32:
# each tile is reduced to its best two while it is in cache, and merged into the running best
# two of its queries (a whole row of similarities, up to 150,000 columns, was memory-bound)
BLOCK = 1024
REFERENCE_BLOCK = 4096
_UNIT_ROUNDOFF = 2.0**-24


def decision_margin(n_features: int) -> float:
    """Lead of the best similarity above which every float32 summation order agrees on it."""
    nu = n_features * _UNIT_ROUNDOFF
    return 4.0 * nu / (1.0 - nu)


def nearest_rows(
    reference: np.ndarray,
    queries: np.ndarray,
    reference_groups: np.ndarray | None = None,
    query_groups: np.ndarray | None = None,
    block: int = BLOCK,
    reference_block: int = REFERENCE_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Index of each query's most similar reference row, and whether that is a near-tie.

    Args:
        reference: (R, F) unit rows, float32; queries: (Q, F) unit rows, float32.
        reference_groups, query_groups: (R,) and (Q,) int codes; reference row r is hidden
            from query q where they are equal (None: nothing hidden).
    Returns:
        (Q,) int64 row indices (first maximum) and (Q,) bool: the lead over the second best
        visible row is at most :func:`decision_margin`, or the query sees fewer than two rows.
    """
    import torch  # imported here: eval-chammi's other steps need no torch

    n_queries = len(queries)
    best = np.zeros(n_queries, dtype=np.int64)
    near_tie = np.ones(n_queries, dtype=bool)
    if n_queries == 0 or len(reference) == 0:
        return best, near_tie
    margin = decision_margin(reference.shape[1])
    ref = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float32))
    ref_groups = None if reference_groups is None else torch.from_numpy(reference_groups)
    n_ref = len(ref)
    for start in range(0, n_queries, block):
        stop = min(start + block, n_queries)
        query = torch.from_numpy(np.ascontiguousarray(queries[start:stop], dtype=np.float32))
        own_groups = None if ref_groups is None else torch.from_numpy(query_groups[start:stop])
        top = torch.full((stop - start,), float("-inf"))
        second = torch.full((stop - start,), float("-inf"))
        index = torch.zeros(stop - start, dtype=torch.int64)
        for first in range(0, n_ref, reference_block):
            last = min(first + reference_block, n_ref)
            sims = query @ ref[first:last].T
            if own_groups is not None:
                sims.masked_fill_(
                    own_groups[:, None] == ref_groups[None, first:last], float("-inf")
                )
            # the tile's first maximum (as faiss keeps on ties) and its second best value
            tile_top, tile_index = sims.max(dim=1)
            if last - first > 1:
                tile_second = sims.topk(2, dim=1).values[:, 1]
            else:
                tile_second = torch.full_like(tile_top, float("-inf"))
            better = tile_top > top  # strictly: an earlier row keeps its place on equality
            second = torch.where(
                better, torch.maximum(top, tile_second), torch.maximum(second, tile_top)
            )
            index = torch.where(better, tile_index + first, index)
            top = torch.where(better, tile_top, top)
        best[start:stop] = index.numpy()
        if n_ref > 1:
            near_tie[start:stop] = ~((top - second) > margin).numpy()
    return best, near_tie


def reference_search(reference: np.ndarray, queries: np.ndarray, fold_size: int) -> np.ndarray:
    """faiss ``IndexFlatIP`` top-1 row of each query, computed as a search of a fold of
    ``fold_size`` queries computes it (faiss switches from per-pair dot products to a BLAS
    product at ``distance_compute_blas_threshold`` queries: a short list is padded to that
    many so that it takes the fold's path)."""
    import faiss  # imported here: faiss is slow to import and only this path needs it

    if len(queries) == 0:
        return np.empty(0, dtype=np.int64)
    threshold = int(faiss.cvar.distance_compute_blas_threshold)
    query = np.ascontiguousarray(queries, dtype=np.float32)
    n = len(query)
    if fold_size >= threshold > n:
        query = np.concatenate([query, np.repeat(query[:1], threshold - n, axis=0)])
    index = faiss.IndexFlatIP(reference.shape[1])
    index.add(np.ascontiguousarray(reference, dtype=np.float32))
    _, nearest = index.search(query, 1)
    return nearest[:n, 0].astype(np.int64)


def fold_predictions(
    folds: list[tuple[object, np.ndarray, np.ndarray]],
    train_rows: np.ndarray,
    labels: np.ndarray,
    normalised: Callable[[np.ndarray, str], np.ndarray],
) -> list[np.ndarray] | None:
    """Predicted labels per fold (fold order) from one similarity pass, or None when the folds
    are not Train (+ the other folds' queries, in row order) as this pass assumes.

    ``normalised(rows, what)``: the float32 unit features of those metadata rows (``what``
    names them in an error).
    """
    queries = [q for _g, _r, q in folds]
    all_queries = np.concatenate(queries)
    if len(folds) == 1:
        pool = np.asarray(train_rows)
    else:
        pool = np.concatenate([train_rows, np.sort(all_queries)])
    for index, (_group, reference_rows, _query) in enumerate(folds):
        expected = train_rows
        if len(folds) > 1:
            others = np.sort(np.concatenate([q for i, q in enumerate(queries) if i != index]))
            expected = np.concatenate([train_rows, others])
        if not np.array_equal(reference_rows, expected):
            return None
    fold_of_query = np.repeat(np.arange(len(folds)), [len(q) for q in queries])
    pool_groups = np.full(len(pool), -1, dtype=np.int64)
    query_groups = None
    if len(folds) > 1:  # the task's rows follow Train in row order: their fold codes
        pool_groups[len(train_rows) :] = fold_of_query[np.argsort(all_queries, kind="stable")]
        query_groups = fold_of_query
    reference = normalised(pool, "reference features")
    query = normalised(all_queries, "query features")
    groups = None if query_groups is None else pool_groups
    best, near_tie = nearest_rows(reference, query, groups, query_groups)
    predicted = labels[pool[best]]
    offsets = np.cumsum([0] + [len(q) for q in queries])
    out = []
    for index, (_group, reference_rows, query_rows) in enumerate(folds):
        span = slice(offsets[index], offsets[index + 1])
        fold_pred = predicted[span].copy()
        ties = np.flatnonzero(near_tie[span])
        if len(ties):
            visible = pool_groups != index
            nearest = reference_search(
                reference[visible], query[span][ties], fold_size=len(query_rows)
            )
            fold_pred[ties] = labels[reference_rows[nearest]]
        out.append(fold_pred)
    return out
