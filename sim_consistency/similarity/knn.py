"""Mutual k-nearest-neighbour alignment (Huh et al., 2024, "The platonic representation
hypothesis", eq. 11).

For each sample, take its k nearest neighbours by cosine similarity in X and in Y (the sample
itself excluded *by index*, so duplicate rows are still neighbours of each other); the score is
the mean over samples of ``|N_X(i) ∩ N_Y(i)| / k``. Ties are broken deterministically by the
lower row index: similarities are rounded to 12 decimals (so that identical rows, whose dot
products BLAS may round differently, tie exactly) and sorted stably. The neighbour table, (n, k),
is the per-representation statistic (:func:`knn_table`), computed in row slabs.

A constant representation (every row the same) has no neighbourhood structure: every
similarity ties and the neighbours would be the lowest indices, an artefact. Its table is all
``-1`` and any score with it is NaN with a
:class:`~sim_consistency.similarity.DegenerateRepresentationWarning`, as for CKA and RSA.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from sim_consistency.errors import ConfigError
from sim_consistency.similarity._arrays import as_matrix, check_pair, row_chunks, warn_degenerate

__all__ = ["mutual_knn", "knn_table", "mutual_knn_from_tables"]

DEFAULT_SLAB_ROWS = 1024
_DECIMALS = 12


def _check_k(k: int, n: int) -> None:
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"mutual_knn: k must be a positive integer (got {k!r}).")
    if k >= n:
        raise ConfigError(
            f"mutual_knn: k={k} neighbours need more than k samples (got n={n}); lower k."
        )


def knn_table(X: Any, k: int, *, slab_rows: int = DEFAULT_SLAB_ROWS) -> npt.NDArray[np.int64]:
    """Return the indices of each row's k cosine nearest neighbours, (n, k), nearest first.

    Args:
        X: features, (n, d), one row per sample.
        k: neighbours per sample (1 <= k < n).
        slab_rows: similarity rows computed at once (memory O(slab_rows · n)).

    Returns:
        The (n, k) table; all ``-1`` when ``X`` is constant (no neighbourhood structure).
    """
    X = as_matrix(X, "X").astype(np.float64)
    n = X.shape[0]
    _check_k(k, n)
    if not np.ptp(X, axis=0).any():
        return np.full((n, k), -1, dtype=np.int64)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    Z = X / np.where(norms > 0, norms, 1.0)
    table = np.empty((n, k), dtype=np.int64)
    for rows in row_chunks(n, slab_rows):
        S = np.round(Z[rows] @ Z.T, _DECIMALS)
        local = np.arange(rows.stop - rows.start)
        S[local, local + rows.start] = -np.inf
        table[rows] = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return table


def mutual_knn_from_tables(A: np.ndarray, B: np.ndarray) -> float:
    """Return the mean fraction of shared neighbours of two (n, k) neighbour tables.

    NaN with a warning when either table is that of a constant representation (all ``-1``).
    """
    if A.shape != B.shape:
        raise ConfigError(f"mutual_knn: neighbour tables differ in shape ({A.shape} vs {B.shape}).")
    if (A.size and A.min() < 0) or (B.size and B.min() < 0):
        return warn_degenerate("mutual_knn")
    shared = (A[:, :, None] == B[:, None, :]).any(axis=2).sum(axis=1)
    return float(shared.mean() / A.shape[1])


def mutual_knn(X: Any, Y: Any, k: int = 10) -> float:
    """Return the mutual k-NN alignment of two representations, a float in [0, 1].

    NaN with a :class:`DegenerateRepresentationWarning` when either is constant.

    Args:
        X: features of model A, (n, d_x), one row per sample.
        Y: features of model B, (n, d_y), the same rows in the same order.
        k: neighbours per sample, cosine similarity, self excluded by index.

    Raises:
        ConfigError: different row counts, or k < 1 or k >= n.
    """
    X, Y = check_pair(X, Y, "mutual_knn")
    _check_k(k, X.shape[0])
    return mutual_knn_from_tables(knn_table(X, k), knn_table(Y, k))
