"""Confidence intervals for model×model similarity matrices and block×block CKA grids.

The point estimates are computed by the plain functions themselves
(:func:`~sim_consistency.similarity.similarity_matrix`,
:func:`~sim_consistency.similarity.cka_grid`), so they are bitwise the numbers a run without
intervals reports. The intervals are delete-a-group jackknife intervals
(:mod:`~sim_consistency.uncertainty.jackknife`) whose leave-group-out values are assembled
exactly from per-group sufficient statistics of one extra pass:

============  ==============================================  ================================
metric        leave-group-out values from                       module
============  ==============================================  ================================
linear CKA    per-group cross-covariances ``X_g^T Y_g``,       :mod:`.linear_cka`
              column sums and re-centred row norms (the
              point's own group-by-group products for the
              default groups: one pass)
RBF CKA       K×K block sums of kernel products and per-group  :mod:`.rbf_cka`
              kernel row sums (bandwidth fixed at full σ;
              the plain streamed pass's own sums for the
              default groups: one pass)
RSA           RDM restricted to kept pairs, ranks redone       :mod:`.rsa`
              (from the point's own sort: one preparation)
mutual k-NN   not available (neighbour sets change with the     —
              kept rows; a later issue)
============  ==============================================  ================================

Jackknife for every metric: each is a smooth function of U-/V-statistic-like sums over rows or
row pairs, for which the grouped jackknife variance is consistent (Efron & Stein, 1981); a
bootstrap would duplicate rows, and a duplicated row is a pair at distance 0 that changes the
kernels, the RDM ranks and the unbiased HSIC's diagonal-free sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from sim_consistency.config.similarity import MetricSpec
from sim_consistency.errors import ConfigError
from sim_consistency.progress import progress_bar
from sim_consistency.similarity._arrays import as_matrix, l2_normalize
from sim_consistency.similarity.cka import (
    LinearStats,
    accumulation_groups,
    choose_space,
    cross_products,
    linear_cka_from_stats,
    linear_stats_keeping,
    rbf_stats,
)
from sim_consistency.similarity.grid import (
    _check_rows,
    block_stats,
    cka_grid_from_stats,
)
from sim_consistency.similarity.matrix import rbf_streamed_matrix, similarity_matrix
from sim_consistency.similarity.streamed import DEFAULT_MEMORY_BUDGET, resolve_device
from sim_consistency.uncertainty.jackknife import (
    DEFAULT_GROUPS,
    Interval,
    jackknife_interval,
    row_groups,
)
from sim_consistency.uncertainty.linear_cka import (
    DEFAULT_PAIR_BUDGET,
    LinearGroupStats,
    linear_cka_leave_out,
    linear_group_stats,
    linear_matrix_leave_out,
    linear_pair_leave_out,
    linear_stats_from_point,
    pair_full,
)
from sim_consistency.uncertainty.rbf_cka import rbf_cka_leave_out, rbf_leave_out_from_blocks
from sim_consistency.uncertainty.rsa import (
    check_rsa_leave_out_memory,
    rdm_ranks,
    rsa_leave_out,
    rsa_with_leave_out,
)

__all__ = [
    "GridBlocks",
    "similarity_matrix_ci",
    "cka_grid_ci",
    "grid_blocks",
    "grid_with_leave_out",
    "grid_leave_out",
    "leave_out_matrix",
]


def grid_leave_out(
    stats_a: Sequence[LinearGroupStats],
    stats_b: Sequence[LinearGroupStats],
    *,
    unbiased: bool = False,
    budget: int = DEFAULT_MEMORY_BUDGET,
) -> np.ndarray:
    """Return the (La, Lb, K) leave-group-out linear CKA of two models' blocks.

    ``stats_a``/``stats_b``: :func:`linear_group_stats` of each block (same row groups); when
    they are the same sequence object only the upper triangle is computed.
    """
    same = stats_b is stats_a
    k = stats_a[0].n_groups
    theta = np.empty((len(stats_a), len(stats_b), k))
    for i, x in enumerate(stats_a):
        for j, y in enumerate(stats_b):
            if same and j < i:
                theta[i, j] = theta[j, i]
            else:
                theta[i, j] = linear_cka_leave_out(x, y, unbiased=unbiased, budget=budget)
    return theta


@dataclass(frozen=True)
class GridBlocks:
    """One model's blocks prepared for linear CKA grids, with jackknife statistics or not.

    Attributes:
        stats: the plain :class:`~sim_consistency.similarity.cka.LinearStats` of each block
            (bitwise :func:`~sim_consistency.similarity.block_stats`).
        jack: per-block :class:`LinearGroupStats` for the row groups, or None (no interval).
        one_pass: the groups are linear CKA's accumulation groups (K = 20, seed 0, feature
            space): each cell's leave-out values reuse the cell's own group products.
    """

    stats: list[LinearStats]
    jack: list[LinearGroupStats] | None
    one_pass: bool


def grid_blocks(
    blocks: Sequence[Any],
    *,
    space: Literal["feature", "gram"] = "feature",
    groups: np.ndarray | None = None,
    budget: int = DEFAULT_PAIR_BUDGET,
) -> GridBlocks:
    """Return one model's :class:`GridBlocks` (``groups``: the jackknife row groups, or None).

    ``stats`` are :func:`~sim_consistency.similarity.block_stats` ``(blocks, space=space)``
    either way; with the default groups in feature space the blocks' self products of that
    same pass give the jackknife statistics (no second pass).
    """
    if groups is None or not len(blocks):  # block_stats names an empty model
        return GridBlocks(block_stats(blocks, space=space), None, False)
    widths = [np.shape(X)[1] for X in blocks]
    n = np.shape(blocks[0])[0] if len(blocks) else 0
    if (
        space == "feature"
        and np.array_equal(groups, accumulation_groups(n))
        and 8 * (int(groups.max()) + 1) * max(widths) ** 2 <= budget
    ):
        mats = [as_matrix(X, f"blocks[{i}]") for i, X in enumerate(blocks)]
        _check_rows([("blocks", mats)])  # as block_stats
        stats, jack = [], []
        for X in mats:
            st, products, total = linear_stats_keeping(X, space="feature", keep=True)
            assert products is not None and total is not None
            stats.append(st)
            jack.append(linear_stats_from_point(st, products, total))
        return GridBlocks(stats, jack, True)
    stats = block_stats(blocks, space=space)
    return GridBlocks(stats, [linear_group_stats(X, groups, budget=budget) for X in blocks], False)


def grid_with_leave_out(
    a: GridBlocks, b: GridBlocks, *, unbiased: bool = False, budget: int = DEFAULT_PAIR_BUDGET
) -> tuple[np.ndarray, np.ndarray | None]:
    """Return the (La, Lb) linear CKA grid of two models and its (La, Lb, K) leave-out values.

    The grid is bitwise :func:`~sim_consistency.similarity.cka_grid_from_stats` of the two
    models' stats (symmetric when ``a is b``); the leave-out values are None without groups.
    """
    if a.jack is None or b.jack is None:
        return cka_grid_from_stats(a.stats, b.stats, unbiased=unbiased), None
    if not (a.one_pass and b.one_pass):
        grid = cka_grid_from_stats(a.stats, b.stats, unbiased=unbiased)
        return grid, grid_leave_out(a.jack, b.jack, unbiased=unbiased, budget=budget)
    same = a is b
    k = a.jack[0].n_groups
    grid = np.empty((len(a.stats), len(b.stats)), dtype=np.float64)
    theta = np.empty((len(a.stats), len(b.stats), k))
    for i, sa in enumerate(a.stats):
        for j, sb in enumerate(b.stats):
            if same and j < i:
                grid[i, j], theta[i, j] = grid[j, i], theta[j, i]
                continue
            total, products = cross_products(sa, sb, keep=True)
            assert products is not None
            grid[i, j] = linear_cka_from_stats(sa, sb, unbiased=unbiased, cross=total)
            theta[i, j] = linear_pair_leave_out(
                a.jack[i], b.jack[j], products, total, unbiased=unbiased
            )
    return grid, theta


def leave_out_matrix(
    mats: Sequence[np.ndarray],
    spec: MetricSpec,
    groups: np.ndarray,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> np.ndarray:
    """Return the (M, M, K) leave-group-out similarities of prepared (normalised) features.

    Args:
        mats: M feature arrays (n, d_m), already preprocessed as the point estimate's were.
        spec: the metric (``cka`` linear/RBF, ``rsa``).
        groups: row-group label of each row, (n,).
        memory_budget: bytes for the per-group working set.

    Raises:
        ConfigError: a metric without a jackknife (``mknn``).
    """
    m = len(mats)
    if spec.sim_method == "cka" and spec.sim_kernel == "linear":
        stats = [linear_group_stats(X, groups, budget=memory_budget) for X in mats]
        out = np.empty((m, m, int(groups.max()) + 1))
        for a in range(m):
            for b in range(a, m):
                out[a, b] = out[b, a] = linear_cka_leave_out(
                    stats[a], stats[b], unbiased=bool(spec.unbiased), budget=memory_budget
                )
        return out
    if spec.sim_method == "cka":
        rbf = [
            rbf_stats(X, sigma=spec.sigma, sigma_median=spec.sigma_median, self_terms=False)
            for X in mats
        ]
        return rbf_cka_leave_out(
            rbf, groups, unbiased=bool(spec.unbiased), slab_rows=1024, memory_budget=memory_budget
        )
    if spec.sim_method == "rsa":
        assert spec.rsa_method is not None and spec.corr_method is not None
        n = mats[0].shape[0] if mats else 0
        check_rsa_leave_out_memory(m, n, spec.corr_method, memory_budget)
        prepared = [rdm_ranks(X, rdm=spec.rsa_method, corr=spec.corr_method) for X in mats]
        return rsa_leave_out(prepared, groups, memory_budget=memory_budget)
    raise ConfigError(
        f"similarity_matrix_ci: no confidence interval for sim_method {spec.sim_method!r} yet "
        "(available: cka with the linear or rbf kernel, rsa)."
    )


def _linear_one_pass(
    mats: Sequence[np.ndarray],
    spec: MetricSpec,
    groups: np.ndarray,
    memory_budget: int,
    point_options: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray] | None:
    """Return ``(point, leave_out)`` of linear CKA from one pass, or None when it does not apply.

    Applies in feature space when ``groups`` are linear CKA's accumulation groups
    (:func:`~sim_consistency.similarity.cka.accumulation_groups`: the default K = 20, seed 0)
    and the K group products of a pair fit ``memory_budget``. The point is then computed
    exactly as :func:`~sim_consistency.similarity.similarity_matrix` does it (same statistics,
    same group-by-group sums, same per-pair formula), so it is bitwise that matrix; the
    leave-group-out values reuse the sums' per-group products instead of a second pass.
    """
    if not (spec.sim_method == "cka" and spec.sim_kernel == "linear") or not mats:
        return None
    n = mats[0].shape[0]
    widths = [X.shape[1] for X in mats]
    space = point_options.get("space", "auto")
    if space == "auto":
        space = choose_space(n, widths)
    k = int(groups.max()) + 1
    if (
        space != "feature"
        or not np.array_equal(groups, accumulation_groups(n))
        or 8 * k * max(widths) ** 2 > memory_budget
    ):
        return None
    progress = bool(point_options.get("progress", False))
    unbiased = bool(spec.unbiased)
    stats, jack, totals = [], [], []
    for X in progress_bar(mats, desc="prepare", disable=not progress):
        st, products, total = linear_stats_keeping(X, space="feature", keep=True)
        assert products is not None and total is not None
        stats.append(st)
        jack.append(linear_stats_from_point(st, products, total))
        totals.append(total)
    m = len(mats)
    point = np.empty((m, m), dtype=np.float64)
    full = np.empty((m, m, k))
    pairs = [(i, j) for i in range(m) for j in range(i, m)]
    for i, j in progress_bar(pairs, desc="pairs", disable=not progress):
        if i == j:
            total = totals[i]
            full[i, i] = jack[i].self_full
        else:
            total, products = cross_products(stats[i], stats[j], keep=True)
            assert products is not None
            full[i, j] = full[j, i] = pair_full(jack[i], jack[j], products, total)
        point[i, j] = point[j, i] = linear_cka_from_stats(
            stats[i], stats[j], unbiased=unbiased, cross=total
        )
    return point, linear_matrix_leave_out(full, jack, unbiased=unbiased)


def _rbf_one_pass(
    mats: Sequence[np.ndarray],
    spec: MetricSpec,
    groups: np.ndarray,
    memory_budget: int,
    device: str,
    point_options: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray] | None:
    """Return ``(point, leave_out)`` of streamed RBF CKA from one pass, or None.

    Applies when ``groups`` are the plain pass's own row groups (the default K = 20, seed 0):
    :func:`~sim_consistency.similarity.matrix.rbf_streamed_matrix` is then the point (bitwise
    :func:`~sim_consistency.similarity.similarity_matrix`) and its block sums give the
    leave-group-out values.
    """
    if not (spec.sim_method == "cka" and spec.sim_kernel == "rbf") or not mats:
        return None
    if not point_options.get("streamed", True):
        return None
    if not np.array_equal(groups, accumulation_groups(mats[0].shape[0])):
        return None
    done = rbf_streamed_matrix(
        mats,
        spec,
        memory_budget=memory_budget,
        device=device,
        progress=bool(point_options.get("progress", False)),
    )
    theta = rbf_leave_out_from_blocks(done.blocks, done.stats, unbiased=bool(spec.unbiased))
    return done.point, theta


def similarity_matrix_ci(
    features: Sequence[Any],
    spec: MetricSpec,
    *,
    n_groups: int = DEFAULT_GROUPS,
    seed: int = 0,
    level: float = 0.95,
    normalize: bool = True,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    device: str = "cpu",
    bias_correct: bool = True,
    **point_options: Any,
) -> Interval:
    """Return the (M, M) similarity matrix with jackknife standard errors and intervals.

    Args:
        features: M feature arrays, each (n, d_m), rows aligned.
        spec: the metric (linear or RBF CKA, biased or unbiased; RSA, Pearson or Spearman).
        n_groups: K, the number of disjoint random row groups.
        seed: seed of the row groups (recorded in the result).
        level: nominal coverage of the intervals.
        normalize: L2-normalise rows first, as :func:`similarity_matrix` (same default).
        memory_budget: bytes for the streamed/point and per-group working sets.
        device: for the point estimate, as :func:`similarity_matrix`.
        bias_correct: centre the intervals on the jackknife bias-corrected estimate (see
            :mod:`~sim_consistency.uncertainty.jackknife`; the point stays as it is).
        point_options: further keywords of :func:`similarity_matrix` for the point estimate
            (``progress``, ``scratch_dir``, ``space``; none changes its numbers).

    Returns:
        :class:`~sim_consistency.uncertainty.jackknife.Interval` with ``point`` (bitwise
        ``similarity_matrix(features, spec, normalize=normalize, ...)``), ``se``, ``ci_low``,
        ``ci_high``, ``bias`` as (M, M) arrays, ``leave_out`` (M, M, K), ``groups`` (n,),
        ``n_groups``, ``seed``, ``method``.
    """
    mats = [as_matrix(X, f"features[{i}]") for i, X in enumerate(features)]
    if normalize:
        mats = [l2_normalize(X) for X in mats]
    n = mats[0].shape[0] if mats else 0
    groups = row_groups(n, n_groups, seed=seed)
    fused = _linear_one_pass(mats, spec, groups, memory_budget, point_options)
    if fused is None:
        fused = _rbf_one_pass(mats, spec, groups, memory_budget, device, point_options)
    if fused is None and spec.sim_method == "rsa" and point_options.get("streamed", True):
        assert spec.rsa_method is not None and spec.corr_method is not None
        fused = rsa_with_leave_out(
            mats,
            groups,
            rdm=spec.rsa_method,
            corr=spec.corr_method,
            memory_budget=memory_budget,
            device=resolve_device(device),
            scratch_dir=point_options.get("scratch_dir"),
            progress=bool(point_options.get("progress", False)),
        )
    if fused is not None:
        point, theta = fused
    else:
        point = similarity_matrix(
            features,
            spec,
            normalize=normalize,
            memory_budget=memory_budget,
            device=device,
            **point_options,
        )
        theta = leave_out_matrix(mats, spec, groups, memory_budget=memory_budget)
    return jackknife_interval(
        point, theta, level=level, seed=seed, groups=groups, bias_correct=bias_correct
    )


def cka_grid_ci(
    blocks_a: Sequence[Any],
    blocks_b: Sequence[Any],
    unbiased: bool = False,
    *,
    n_groups: int = DEFAULT_GROUPS,
    seed: int = 0,
    level: float = 0.95,
    space: Literal["auto", "feature", "gram"] = "auto",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    bias_correct: bool = True,
) -> Interval:
    """Return the (La, Lb) linear CKA grid of two models with jackknife intervals.

    ``point`` is bitwise ``cka_grid(blocks_a, blocks_b, unbiased, space=space)`` (the same
    statistics and per-cell formula, :func:`grid_with_leave_out`); each block's per-group
    statistics are built once and every cell costs one grouped cross product — the cell's own
    point products with the default groups (K = 20, seed 0) in feature space.
    Arguments as :func:`~sim_consistency.similarity.cka_grid` plus ``n_groups``, ``seed``,
    ``level`` and ``bias_correct`` (see :func:`similarity_matrix_ci`).
    """
    mats_a = [as_matrix(X, f"blocks_a[{i}]") for i, X in enumerate(blocks_a)]
    same = blocks_b is blocks_a
    mats_b = mats_a if same else [as_matrix(X, f"blocks_b[{j}]") for j, X in enumerate(blocks_b)]
    if not mats_a or not mats_b:
        raise ConfigError("cka_grid: both models need at least one block.")
    n = _check_rows([("blocks_a", mats_a), ("blocks_b", mats_b)])
    if space == "auto":  # as cka_grid
        space = choose_space(n, [X.shape[1] for X in mats_a + mats_b])
    if space not in ("feature", "gram"):
        raise ConfigError(f"cka_grid: space must be auto, feature or gram (got {space!r}).")
    groups = row_groups(n, n_groups, seed=seed)
    ga = grid_blocks(mats_a, space=space, groups=groups, budget=memory_budget)
    gb = ga if same else grid_blocks(mats_b, space=space, groups=groups, budget=memory_budget)
    point, theta = grid_with_leave_out(ga, gb, unbiased=unbiased, budget=memory_budget)
    return jackknife_interval(
        point, theta, level=level, seed=seed, groups=groups, bias_correct=bias_correct
    )
