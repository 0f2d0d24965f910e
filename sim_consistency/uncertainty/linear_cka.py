"""Leave-group-out linear CKA from per-group cross-covariances (exact, one pass over rows).

For features ``X`` (n, d_x), centred once with the full-sample mean (rows ``x~_i``), and the
jackknife row groups of :func:`~sim_consistency.uncertainty.jackknife.row_groups`, each group
``g`` contributes its cross-product ``P_g = X~_g^T Y~_g`` and its column sums
``t_g = sum_{i in g} x~_i``. Leaving ``g`` out keeps ``m = n - n_g`` rows, whose own mean is
``mu + delta`` with ``delta = -t_g / m`` (the full centred rows sum to zero), so

* ``C_(g) = sum_{i not in g} (x~_i + t^x_g/m)(y~_i + t^y_g/m)^T = C - P_g - t^x_g t^y_g^T / m``
  with ``C = sum_g P_g``: the biased numerator is ``||C_(g)||_F^2`` (Kornblith et al., 2019,
  eq. 4 via ``tr(KHLH) = ||X_c^T Y_c||_F^2``);
* ``a_i^(g) = |x~_i + t^x_g/m|^2 = a_i + 2 x~_i.t^x_g / m + |t^x_g|^2 / m^2`` (the row norms of
  the re-centred kept rows), from which the unbiased U-statistic (Song et al., 2012, eq. 5, in
  the diagonal-free form of :mod:`~sim_consistency.similarity.cka`) is
  ``||C_(g)||^2 - a.b + sum(a) sum(b) / ((m-1)(m-2)) - 2/(m-2) a.b`` over the kept rows.

This is exactly the estimator of :func:`~sim_consistency.similarity.cka` on the kept rows
(tested ≤ 1e-10 against recomputing it), not an approximation. Cost per pair: the K group
GEMMs sum to one ``n d_x d_y`` product (the plain estimator's cost again) plus ``K d_x d_y``;
memory ``K d_x d_y`` float64 (two passes over the groups when that exceeds ``memory_budget``).
Per representation: ``P_g`` of X with itself (the denominators), ``t_g`` and ``a^(g)``.
There is no Gram-space variant yet: for d >> n (where the plain matrix works with n×n Gram
matrices) this costs ``n d_x d_y`` per pair all the same.

One pass. The plain feature-space estimator accumulates ``X^T Y`` over the fixed accumulation
groups of :func:`~sim_consistency.similarity.cka.accumulation_groups` — bitwise the jackknife's
default groups (``row_groups(n, 20, seed=0)``). For those groups the ``P_g`` *are* the plain
pass's own products (:func:`~sim_consistency.similarity.cka.cross_products` with ``keep``) and
``C`` its sum: :func:`linear_stats_from_point` and :func:`linear_pair_leave_out` then add only
the ``O(K d_x d_y)`` assembly and ``O(n d K)`` per representation to the plain cost. Other
groups (another K or seed) take the separate pass of :func:`linear_group_stats`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sim_consistency.errors import ConfigError
from sim_consistency.similarity._arrays import as_matrix, column_mean
from sim_consistency.similarity.cka import LinearStats

__all__ = [
    "LinearGroupStats",
    "linear_group_stats",
    "linear_cka_leave_out",
    "linear_stats_from_point",
    "linear_pair_leave_out",
    "linear_matrix_leave_out",
    "pair_full",
]

#: Bytes for the K stacked d_x×d_y group products of one pair before switching to two passes.
DEFAULT_PAIR_BUDGET = 1 << 30


@dataclass(frozen=True, eq=False)
class LinearGroupStats:
    """One representation's per-group statistics for leave-group-out linear CKA.

    Attributes:
        blocks: the centred float64 rows of each group (full mean), zero-padded to the
            largest group: (K, max n_g, d) (zero rows add nothing to ``X_g^T Y_g``); None when
            the group products come from the plain pass (:func:`linear_stats_from_point`).
        sizes: rows per group, (K,).
        sums: ``t_g``, the column sums of each group's centred rows, (K, d).
        kept_sq_norms: ``a_i^(g)`` for every row i and left-out group g, (n, K); 0 where
            ``i`` is in ``g`` (the row is not kept).
        kept_sum: ``sum_i a_i^(g)`` per left-out group, (K,).
        self_full: ``||C_(g)||_F^2`` of X with itself, (K,).
        self_unbiased: ``m(m-3) HSIC_u(X, X)`` on the kept rows, (K,).
    """

    blocks: npt.NDArray[np.float64] | None
    sizes: npt.NDArray[np.int64]
    sums: npt.NDArray[np.float64]
    kept_sq_norms: npt.NDArray[np.float64]
    kept_sum: npt.NDArray[np.float64]
    self_full: npt.NDArray[np.float64]
    self_unbiased: npt.NDArray[np.float64]

    @property
    def n(self) -> int:
        return int(self.sizes.sum())

    @property
    def n_groups(self) -> int:
        return int(self.sizes.size)

    @property
    def sums_sq(self) -> npt.NDArray[np.float64]:
        """``||t_g||^2`` per group, (K,) (computed once)."""
        if "_sums_sq" not in self.__dict__:
            object.__setattr__(self, "_sums_sq", (self.sums * self.sums).sum(axis=1))
        return self.__dict__["_sums_sq"]


def _group_products(
    sx: LinearGroupStats,
    sy: LinearGroupStats,
    budget: int,
    products: npt.NDArray[np.float64] | None = None,
    total: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.float64]:
    """Return ``||C_(g)||_F^2`` for every left-out group g, (K,).

    ``products`` (K, dx, dy) and ``total`` (their sum ``C``): the plain pass's group products;
    else they are formed here from the stats' blocks.
    """
    k = sx.n_groups
    dx, dy = sx.sums.shape[1], sy.sums.shape[1]
    kept = (sx.n - sx.sizes).astype(np.float64)
    if products is not None or k * dx * dy * 8 <= budget:
        # ||C - Q_g||^2 = ||C||^2 - 2 <C, Q_g> + ||Q_g||^2 with Q_g = P_g + t^x_g t^y_g^T / m:
        # four reads of the K products and no (K, dx, dy) temporaries (each would cost page
        # faults comparable to the products themselves at small d).
        if products is None:
            assert sx.blocks is not None and sy.blocks is not None
            P = np.matmul(sx.blocks.transpose(0, 2, 1), sy.blocks)  # one batched call
        else:
            P = products
        flat = P.reshape(k, -1)
        C = flat.sum(axis=0) if total is None else total.reshape(-1)
        tx, ty = sx.sums, sy.sums
        c_q = flat @ C + ((tx @ C.reshape(dx, dy)) * ty).sum(axis=1) / kept
        t_p_t = (np.matmul(tx[:, None, :], P)[:, 0, :] * ty).sum(axis=1)
        q_q = (
            np.matmul(flat[:, None, :], flat[:, :, None]).ravel()  # K dots (BLAS)
            + 2.0 * t_p_t / kept
            + sx.sums_sq * sy.sums_sq / (kept * kept)
        )
        return float(C @ C) - 2.0 * c_q + q_q
    assert sx.blocks is not None and sy.blocks is not None
    C = np.zeros((dx, dy))
    for g in range(k):
        C += sx.blocks[g].T @ sy.blocks[g]
    out = np.empty(k)
    for g in range(k):
        D = C - sx.blocks[g].T @ sy.blocks[g] - np.outer(sx.sums[g], sy.sums[g]) / kept[g]
        out[g] = np.vdot(D, D)
    return out


def _unbiased(
    full: np.ndarray, row_dot: np.ndarray, sum_a: np.ndarray, sum_b: np.ndarray, m: np.ndarray
) -> npt.NDArray[np.float64]:
    """``m(m-3) HSIC_u`` on the kept rows (see the module docstring), per left-out group."""
    off = full - row_dot
    return off + sum_a * sum_b / ((m - 1) * (m - 2)) - 2.0 / (m - 2) * row_dot


def linear_group_stats(
    X: Any, groups: npt.NDArray[np.int64], *, budget: int = DEFAULT_PAIR_BUDGET
) -> LinearGroupStats:
    """Return the per-group statistics of features ``X`` for the row groups ``groups``.

    Args:
        X: features, (n, d), one row per sample.
        groups: group label of each row in ``[0, K)``, (n,) (see ``row_groups``).
        budget: bytes for the K stacked group products (see the module docstring).
    """
    X = as_matrix(X, "X")
    groups = np.asarray(groups)
    n = X.shape[0]
    if groups.shape != (n,):
        raise ConfigError(
            f"jackknife: {groups.shape[0] if groups.ndim else 0} group labels for {n} rows; "
            "pass one label per row (row_groups(n, K, seed=...))."
        )
    k = int(groups.max()) + 1
    sizes = np.bincount(groups, minlength=k).astype(np.int64)
    if (sizes == 0).any():
        raise ConfigError(f"jackknife: group(s) {np.flatnonzero(sizes == 0).tolist()} are empty.")
    Xc = np.asarray(X, dtype=np.float64) - column_mean(X, max(n, 1))
    order = np.argsort(groups, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    blocks = np.zeros((k, int(sizes.max()), X.shape[1]))
    for g in range(k):
        blocks[g, : sizes[g]] = Xc[order[bounds[g] : bounds[g + 1]]]
    sums = blocks.sum(axis=1)
    m = (n - sizes).astype(np.float64)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    kept_sq = sq[:, None] + 2.0 * (Xc @ sums.T) / m + (sums * sums).sum(axis=1) / (m * m)
    kept_sq[np.arange(n), groups] = 0.0
    kept_sum = kept_sq.sum(axis=0)
    stats = LinearGroupStats(blocks, sizes, sums, kept_sq, kept_sum, np.empty(k), np.empty(k))
    full = _group_products(stats, stats, budget)
    row_dot = (kept_sq * kept_sq).sum(axis=0)
    stats.self_full[:] = full
    with np.errstate(divide="ignore", invalid="ignore"):
        stats.self_unbiased[:] = _unbiased(full, row_dot, kept_sum, kept_sum, m)
    return stats


def linear_stats_from_point(
    stats: LinearStats,
    self_products: npt.NDArray[np.float64],
    self_total: npt.NDArray[np.float64],
) -> LinearGroupStats:
    """Return the jackknife statistics of a representation from its plain-pass statistics.

    Args:
        stats: the plain :class:`~sim_consistency.similarity.cka.LinearStats` (feature space);
            its accumulation groups are the jackknife groups.
        self_products: ``Xc_g^T Xc_g`` per group, (K, d, d), as
            :func:`~sim_consistency.similarity.cka.linear_stats_keeping` keeps them.
        self_total: their accumulated sum ``Xc^T Xc``.
    """
    groups = stats.groups
    k, n = len(groups), stats.n
    sizes = np.array([idx.size for idx in groups], dtype=np.int64)
    m = (n - sizes).astype(np.float64)
    sums = np.stack([stats.group_centred(g).sum(axis=0) for g in range(k)])
    kept_sq = np.empty((n, k))
    tail = (sums * sums).sum(axis=1) / (m * m)
    for g, idx in enumerate(groups):
        kept_sq[idx] = stats.sq_norms[idx, None] + 2.0 * (stats.group_centred(g) @ sums.T) / m
        kept_sq[idx] += tail
        kept_sq[idx, g] = 0.0
    kept_sum = kept_sq.sum(axis=0)
    out = LinearGroupStats(None, sizes, sums, kept_sq, kept_sum, np.empty(k), np.empty(k))
    full = _group_products(out, out, 0, self_products, self_total)
    out.self_full[:] = full
    with np.errstate(divide="ignore", invalid="ignore"):
        out.self_unbiased[:] = _unbiased(full, (kept_sq * kept_sq).sum(axis=0), kept_sum,
                                         kept_sum, m)  # fmt: skip
    return out


def linear_pair_leave_out(
    sx: LinearGroupStats,
    sy: LinearGroupStats,
    products: npt.NDArray[np.float64],
    total: npt.NDArray[np.float64],
    *,
    unbiased: bool = False,
) -> npt.NDArray[np.float64]:
    """:func:`linear_cka_leave_out` from the plain pass's group products of the pair.

    ``products``/``total``: ``Xc_g^T Yc_g`` per group (K, d_x, d_y) and their sum, as
    :func:`~sim_consistency.similarity.cka.cross_products` returns them with ``keep``.
    """
    return _cka_from_full(pair_full(sx, sy, products, total), sx, sy, unbiased)


def pair_full(
    sx: LinearGroupStats,
    sy: LinearGroupStats,
    products: npt.NDArray[np.float64],
    total: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Return ``||C_(g)||_F^2`` of a pair for every left-out group from the plain pass's group
    products, (K,) (the part of :func:`linear_pair_leave_out` that needs the products)."""
    return _group_products(sx, sy, 0, products, total)


def linear_matrix_leave_out(
    full: npt.NDArray[np.float64], stats: list[LinearGroupStats], *, unbiased: bool = False
) -> npt.NDArray[np.float64]:
    """Return the (M, M, K) leave-group-out linear CKA of M representations at once.

    ``full[a, b]`` is :func:`pair_full` of the pair (``self_full`` on the diagonal); the
    formulas are :func:`linear_cka_leave_out`'s, evaluated for every pair in a few array
    operations instead of per pair.
    """
    if not stats:
        return np.empty((0, 0, full.shape[-1]))
    return _leave_out_from_full(full, stats, stats, unbiased)


def linear_cka_leave_out(
    sx: LinearGroupStats,
    sy: LinearGroupStats,
    *,
    unbiased: bool = False,
    budget: int = DEFAULT_PAIR_BUDGET,
) -> npt.NDArray[np.float64]:
    """Return linear CKA with each row group left out, (K,): exact leave-group-out values.

    Args:
        sx, sy: :func:`linear_group_stats` of the two representations for the same groups.
        unbiased: the unbiased HSIC estimator (Song et al., 2012) instead of the biased one.
        budget: bytes for the K stacked group products.

    Returns:
        ``theta_(g)``; NaN where a kept subset makes CKA undefined (constant representation,
        non-positive unbiased self-HSIC, fewer than 4 kept rows for the unbiased estimator).
    """
    if sx.n != sy.n or not np.array_equal(sx.sizes, sy.sizes):
        raise ConfigError(
            f"jackknife: the two representations were grouped differently ({sx.n} vs {sy.n} "
            "rows); build both statistics from the same row groups."
        )
    full = sx.self_full if sx is sy else _group_products(sx, sy, budget)
    return _cka_from_full(full, sx, sy, unbiased)


def _cka_from_full(
    full: np.ndarray, sx: LinearGroupStats, sy: LinearGroupStats, unbiased: bool
) -> npt.NDArray[np.float64]:
    """Return ``theta_(g)`` from ``||C_(g)||_F^2`` and the two representations' self terms."""
    return _leave_out_from_full(full[None, None], [sx], [sy], unbiased)[0, 0]


def _leave_out_from_full(
    full: np.ndarray,
    xs: list[LinearGroupStats],
    ys: list[LinearGroupStats],
    unbiased: bool,
) -> npt.NDArray[np.float64]:
    """Return ``theta_(g)`` of every pair ``(xs[a], ys[b])`` from ``full`` (A, B, K): the
    biased or unbiased CKA of the kept rows, NaN where undefined."""
    m = (xs[0].n - xs[0].sizes).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if not unbiased:
            sx, sy = np.stack([s.self_full for s in xs]), np.stack([s.self_full for s in ys])
            denom = sx[:, None, :] * sy[None, :, :]
            out = full / np.sqrt(denom)
        else:
            qx = np.stack([s.kept_sq_norms.T for s in xs], axis=1)  # (K, A, n)
            qy = np.stack([s.kept_sq_norms.T for s in ys], axis=1)  # (K, B, n)
            row_dot = np.matmul(qx, qy.transpose(0, 2, 1)).transpose(1, 2, 0)  # (A, B, K)
            kx, ky = np.stack([s.kept_sum for s in xs]), np.stack([s.kept_sum for s in ys])
            num = _unbiased(full, row_dot, kx[:, None, :], ky[None, :, :], m)
            ux = np.stack([s.self_unbiased for s in xs])
            uy = np.stack([s.self_unbiased for s in ys])
            denom = ux[:, None, :] * uy[None, :, :]
            out = num / np.sqrt(denom)
            out[..., m < 4] = np.nan
    out[~(denom > 0)] = np.nan
    return out
