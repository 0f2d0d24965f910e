"""Block×block linear CKA grids between two models (full grids, not only the diagonal).

:func:`cka_grid` prepares every block's :class:`~sim_consistency.similarity.cka.LinearStats`
once (mean, row norms, self-HSIC, and the Gram matrix when d >> n) and fills the ``La × Lb``
grid with one cross term per cell, so a 13×13 grid costs 26 preparations and 169 float64
cross-covariance products instead of 338 rebuilt n×n Gram matrices. Stages that compare one
reference with many models call :func:`block_stats` once per model and
:func:`cka_grid_from_stats` per pair, so nothing per block is recomputed per pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from sim_consistency.errors import ConfigError
from sim_consistency.similarity._arrays import DEFAULT_CHUNK_ROWS, as_matrix
from sim_consistency.similarity.cka import (
    LinearStats,
    choose_space,
    linear_cka_from_stats,
    linear_stats,
)

__all__ = ["cka_grid", "cka_grid_from_stats", "block_stats"]


def _check_rows(named: Sequence[tuple[str, Sequence[np.ndarray]]]) -> int:
    """Return the common row count of every block, else raise naming the first mismatch."""
    first_name, first = named[0]
    n = first[0].shape[0]
    for name, mats in named:
        for i, X in enumerate(mats):
            if X.shape[0] != n:
                raise ConfigError(
                    f"cka_grid: {name}[{i}] has {X.shape[0]} rows but {first_name}[0] has {n}; "
                    "features of different subsets cannot be compared."
                )
    return n


def block_stats(
    blocks: Sequence[Any],
    *,
    space: Literal["feature", "gram"] = "feature",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> list[LinearStats]:
    """Return the :class:`LinearStats` of each block of one model, in order.

    Args:
        blocks: the model's blocks in forward order, each (n, d_i).
        space: ``"feature"`` or ``"gram"`` (see :func:`~sim_consistency.similarity.cka.cka`).
        chunk_rows: rows per float64 chunk.
    """
    mats = [as_matrix(X, f"blocks[{i}]") for i, X in enumerate(blocks)]
    if not mats:
        raise ConfigError("cka_grid: a model needs at least one block.")
    _check_rows([("blocks", mats)])
    return [linear_stats(X, space=space, chunk_rows=chunk_rows) for X in mats]


def cka_grid_from_stats(
    stats_a: Sequence[LinearStats], stats_b: Sequence[LinearStats], *, unbiased: bool = False
) -> npt.NDArray[np.float64]:
    """Return the (La, Lb) linear CKA grid from per-block statistics (see :func:`cka_grid`).

    When ``stats_a is stats_b`` each unordered pair is computed once and the grid is symmetric.
    """
    same = stats_a is stats_b
    grid = np.empty((len(stats_a), len(stats_b)), dtype=np.float64)
    for i, sa in enumerate(stats_a):
        for j, sb in enumerate(stats_b):
            if same and j < i:
                grid[i, j] = grid[j, i]
            else:
                grid[i, j] = linear_cka_from_stats(sa, sb, unbiased=unbiased)
    return grid


def cka_grid(
    blocks_a: Sequence[Any],
    blocks_b: Sequence[Any],
    unbiased: bool = False,
    *,
    space: Literal["auto", "feature", "gram"] = "auto",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> npt.NDArray[np.float64]:
    """Return linear CKA between every block of model A and every block of model B.

    Args:
        blocks_a: model A's blocks in forward order, each (n, d_i), rows aligned with B's.
        blocks_b: model B's blocks, each (n, d_j).
        unbiased: unbiased HSIC estimator (Song et al., 2012) instead of the biased one.
        space: ``"feature"``, ``"gram"``, or ``"auto"`` (Gram space when n is below the median
            block width, i.e. d >> n).
        chunk_rows: rows per float64 chunk.

    Returns:
        (La, Lb) float64 array; ``grid[i, j] = CKA(blocks_a[i], blocks_b[j])``. When
        ``blocks_a is blocks_b`` the grid is computed once per unordered pair and is symmetric.

    Raises:
        ConfigError: a model without blocks, or blocks with different row counts.
    """
    mats_a = [as_matrix(X, f"blocks_a[{i}]") for i, X in enumerate(blocks_a)]
    same = blocks_b is blocks_a
    mats_b = mats_a if same else [as_matrix(X, f"blocks_b[{j}]") for j, X in enumerate(blocks_b)]
    if not mats_a or not mats_b:
        raise ConfigError("cka_grid: both models need at least one block.")
    n = _check_rows([("blocks_a", mats_a), ("blocks_b", mats_b)])
    if space == "auto":
        space = choose_space(n, [X.shape[1] for X in mats_a + mats_b])
    if space not in ("feature", "gram"):
        raise ConfigError(f"cka_grid: space must be auto, feature or gram (got {space!r}).")
    stats_a = block_stats(mats_a, space=space, chunk_rows=chunk_rows)
    stats_b = stats_a if same else block_stats(mats_b, space=space, chunk_rows=chunk_rows)
    return cka_grid_from_stats(stats_a, stats_b, unbiased=unbiased)
