"""Centred kernel alignment (CKA): linear and RBF, biased and unbiased HSIC estimators.

CKA (Kornblith et al., 2019, "Similarity of neural network representations revisited", eq. 4)
is ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` for the Gram matrices ``K`` of X and ``L`` of Y.
Two HSIC estimators are provided:

* **biased** (Gretton et al., 2005): ``tr(K H L H) / (n - 1)^2`` with ``H = I - 11^T / n``;
* **unbiased** (Song et al., 2012, "Feature selection via dependence maximization", eq. 5;
  used for CKA by Nguyen et al., 2021): with ``K~`` = K with its diagonal zeroed,
  ``[tr(K~L~) + 1^T K~ 1 · 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) · 1^T K~ L~ 1] / (n(n-3))``.
  It needs ``n >= 4`` and is not inflated by high dimension: for independent X, Y with
  ``d >> n`` it is close to 0 where the biased CKA is not.

Linear kernel. Both estimators are invariant to translating the features, so X is centred
first (exactly, with a float64 column mean). With centred rows ``x_i`` the Gram matrix is
already ``HKH`` and, writing ``a_i = |x_i|^2`` and ``b_i = |y_i|^2``,

* ``tr(KHLH) = ||X^T Y||_F^2``;
* ``n(n-3) HSIC_u = ||X^T Y||_F^2 - n/(n-2) · sum_i a_i b_i + sum(a) sum(b) / ((n-1)(n-2))``

(the unbiased form follows from ``K~ 1 = -a`` when the columns sum to zero). The cross term is
accumulated in float64 either in *feature space* — ``X^T Y`` summed over row chunks, O(n d_x d_y)
time and O(d_x d_y + chunk (d_x + d_y)) memory, never n×n — or in *Gram space* —
``<K~, L~>_F`` of the Gram matrices with their diagonals zeroed (the diagonal ``a.b`` is added
back for the biased term only), O(n^2 (d_x + d_y)) time, cheaper when ``d >> n``.
In feature space the sum ``X^T Y = sum_g X_g^T Y_g`` runs over :data:`POINT_GROUPS` fixed
random row groups (:func:`accumulation_groups`, seed 0) in group order, one GEMM per group
(sub-chunks of ``chunk_rows`` inside a larger group): the same FLOPs as contiguous chunks, and
the per-group products are exactly the sufficient statistics of the delete-a-group jackknife
(:mod:`sim_consistency.uncertainty.linear_cka`), so ``--ci`` with its default groups (K = 20,
seed 0) reuses them instead of a second pass, with the point bitwise unchanged. The two agree to
rounding (tested ≤ 1e-10). Per-representation work (mean, row norms, self-HSIC, the Gram
matrix) lives in :class:`LinearStats`, so a model×model matrix or a block×block grid computes
it once per representation and only the cross term per pair.

RBF kernel. ``k(x, x') = exp(-|x - x'|^2 / (2 σ^2))`` with an absolute σ (Rep2Rep's "local"
CKA uses σ = 0.4 on unit-norm features) or ``σ^2 = sigma_median^2 · median`` of all n^2 squared
distances (Kornblith et al.'s convention; the exact median is selected by counting passes over
distance slabs). The n×n kernels are never stored: rows are produced in slabs of ``slab_rows``
and reduced into the sums the estimators need, so memory stays O(slab · n).

Small bandwidths. Every U-statistic here is accumulated from the kernels *without their
diagonal* (:func:`_u_statistic`), as Kornblith et al.'s ``hsic_unbiased`` / thingsvision zero the
diagonal before centring: adding the RBF kernel's unit diagonal and subtracting it again drowns
the O(n^2 ε^2) signal of small off-diagonal values ε in rounding. The off-diagonal RBF kernel is
further kept scaled by its largest entry ``c = exp(-m / (2σ^2))`` (``m``: the smallest squared
distance between two different rows, see :class:`RbfStats`); the unbiased HSIC is bilinear in
it, so ``c`` cancels in CKA and products of tiny entries cannot underflow. The result matches an
extended-precision (``np.longdouble``) evaluation of the same estimator to ≤ 1e-9 for σ from 1
down to 0.05 × the median distance and below (tests/similarity/test_cka_precision.py). Only when
``c`` itself underflows — every off-diagonal entry 0 in float64, e.g. an absolute σ on
un-normalised features — is the unbiased CKA undefined: NaN with a
:class:`~sim_consistency.similarity.BandwidthTooSmallWarning`. The biased CKA then returns what
its formula gives for ``K = I`` (1.0, its exact limit for σ -> 0, whatever the features).

Float64 accumulation is used throughout: the unbiased closed form subtracts large, nearly equal
terms and loses all its digits in float32.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from sim_consistency.errors import ConfigError
from sim_consistency.finite import check_finite
from sim_consistency.similarity._arrays import (
    DEFAULT_CHUNK_ROWS,
    as_matrix,
    check_pair,
    column_mean,
    group_rows,
    random_groups,
    row_chunks,
    warn_bandwidth_too_small,
    warn_degenerate,
)

__all__ = [
    "cka",
    "LinearStats",
    "RbfStats",
    "linear_stats",
    "linear_cka_from_stats",
    "rbf_stats",
    "rbf_cka_from_stats",
    "with_self_terms",
    "median_sq_distance",
    "choose_space",
    "accumulation_groups",
    "cross_products",
    "linear_stats_keeping",
    "POINT_GROUPS",
    "POINT_SEED",
]

Space = Literal["auto", "feature", "gram"]
#: Linear CKA's feature-space cross products are accumulated over this many fixed random row
#: groups (seed :data:`POINT_SEED`), the jackknife's default groups (``--ci_groups 20``).
POINT_GROUPS = 20
POINT_SEED = 0
DEFAULT_SLAB_ROWS = 1024
_UNDEFINED = "A similarity of such features is undefined."


def choose_space(n: int, widths: Sequence[int]) -> Literal["feature", "gram"]:
    """Return the cheaper space for linear CKA of representations of widths ``widths``.

    Feature space costs ``n d_x d_y`` per pair; Gram space ``n^2 d`` per representation plus
    ``n^2`` per pair, and n×n memory. Gram space wins when the representations are wider than
    there are samples (d >> n): we take it when ``n`` is below the median width.
    """
    return "gram" if widths and n < float(np.median(list(widths))) else "feature"


def _check_n(n: int, unbiased: bool, where: str) -> None:
    if unbiased and n < 4:
        raise ConfigError(
            f"{where}: the unbiased HSIC estimator needs at least 4 samples (got n={n}); "
            "use unbiased=False or more samples."
        )
    if n < 2:
        raise ConfigError(f"{where}: CKA needs at least 2 samples (got n={n}).")


def _is_constant(X: np.ndarray, chunk_rows: int) -> bool:
    first = X[:1]
    return all(
        np.array_equal(X[rows], np.broadcast_to(first, X[rows].shape))
        for rows in row_chunks(X.shape[0], chunk_rows)
    )


def _u_statistic(cross: float, row_dot: float, sum_k: float, sum_l: float, n: int) -> float:
    """Return ``n(n-3) HSIC_u`` (Song et al., 2012, eq. 5) from diagonal-free kernel sums.

    Args:
        cross: ``tr(K~ L~) = sum_ij K~_ij L~_ij`` of the kernels with their diagonals zeroed.
        row_dot: ``(K~ 1) . (L~ 1)``.
        sum_k, sum_l: ``1^T K~ 1`` and ``1^T L~ 1``.
        n: samples (>= 4).

    Every input is accumulated without the diagonal, so no large diagonal term is added and
    subtracted again (which loses all digits when the off-diagonal kernel values are small).
    """
    return cross + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * row_dot


# --------------------------------------------------------------------------------------------
# Linear kernel


@dataclass(frozen=True, eq=False)
class LinearStats:
    """Per-representation statistics of linear CKA, computed once and reused for every pair.

    Attributes:
        X: the features as given, (n, d) (not copied; cast to float64 chunk by chunk).
        mean: float64 column mean, (d,).
        sq_norms: ``|x_i - mean|^2`` in float64, (n,).
        gram: centred Gram matrix ``Xc Xc^T`` with its diagonal zeroed (the diagonal is
            ``sq_norms``), (n, n) float64, in Gram space; else ``None``.
        self_biased: ``||Xc^T Xc||_F^2`` (= n-free numerator of the biased HSIC(X, X)).
        self_unbiased: ``n(n-3) HSIC_u(X, X)``.
        is_constant: every row equals the first (CKA is undefined: NaN with a warning).
        chunk_rows: rows per float64 chunk.
        groups: the increasing row indices of each accumulation group
            (:func:`accumulation_groups`), the order of the feature-space sums.
        blocks: feature space, in-memory input: the centred float64 rows of each group,
            zero-padded to the largest group, (K, max n_g, d) — one copy of the features,
            so that a pair's K group products are one batched GEMM without re-centring;
            ``None`` for an ``h5py.Dataset`` (read group by group per pair) or in Gram space.
    """

    X: np.ndarray
    mean: npt.NDArray[np.float64]
    sq_norms: npt.NDArray[np.float64]
    gram: npt.NDArray[np.float64] | None
    self_biased: float
    self_unbiased: float
    is_constant: bool
    chunk_rows: int
    groups: tuple[npt.NDArray[np.int64], ...] = ()
    blocks: npt.NDArray[np.float64] | None = None

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    def centred_at(self, idx: np.ndarray) -> npt.NDArray[np.float64]:
        """Return the rows ``idx`` (increasing) of the centred features in float64."""
        return self.X[idx].astype(np.float64) - self.mean

    def group_centred(self, g: int) -> npt.NDArray[np.float64]:
        """Return the centred float64 rows of accumulation group ``g``, (n_g, d)."""
        if self.blocks is not None:
            return self.blocks[g, : self.groups[g].size]
        return self.centred_at(self.groups[g])


def accumulation_groups(n: int) -> npt.NDArray[np.int64]:
    """Return the group label of each of ``n`` rows in linear CKA's accumulation order.

    ``random_groups(n, min(POINT_GROUPS, n), POINT_SEED)`` — bitwise
    ``row_groups(n, 20, seed=0)`` of the jackknife when ``n >= 20``; one group when n < 2.
    """
    k = min(POINT_GROUPS, n)
    return np.zeros(n, dtype=np.int64) if k < 2 else random_groups(n, k, POINT_SEED)


#: Bytes of a pair's stacked (K, d_x, d_y) group products above which they are formed one
#: group at a time (the choice depends on the shapes only, so every caller sums alike).
_BATCH_BYTES = 1 << 28


def _group_cross(sx: LinearStats, sy: LinearStats, idx: np.ndarray) -> npt.NDArray[np.float64]:
    """Return ``Xc_g^T Yc_g`` of the rows ``idx`` (sub-chunks of ``chunk_rows``, in order)."""
    out: npt.NDArray[np.float64] | None = None
    for rows in row_chunks(idx.size, sx.chunk_rows):
        p = sx.centred_at(idx[rows]).T @ sy.centred_at(idx[rows])
        out = p if out is None else out + p
    if out is None:
        return np.zeros((sx.X.shape[1], sy.X.shape[1]))
    return out


def cross_products(
    sx: LinearStats, sy: LinearStats, *, keep: bool = False
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
    """Return ``Xc^T Yc`` summed group by group in float64, and the per-group products.

    The sum runs over :func:`accumulation_groups` in group order; with ``keep`` each group's
    ``Xc_g^T Yc_g`` is returned too, stacked (K, d_x, d_y) (else None). Keeping them does not
    change the sum's bits: the plain estimator and the jackknife share this one accumulation.
    """
    dx, dy = sx.X.shape[1], sy.X.shape[1]
    k = len(sx.groups)
    acc = np.zeros((dx, dy), dtype=np.float64)
    if sx.blocks is not None and sy.blocks is not None and 8 * k * dx * dy <= _BATCH_BYTES:
        P = np.matmul(sx.blocks.transpose(0, 2, 1), sy.blocks)  # K GEMMs in one call
        np.add.reduce(P, axis=0, out=acc)  # group by group (axis 0 is not the inner axis)
        return acc, (P if keep else None)
    kept = np.empty((k, dx, dy)) if keep else None
    for g, idx in enumerate(sx.groups):
        if sx.blocks is not None and sy.blocks is not None:
            p = sx.group_centred(g).T @ sy.group_centred(g)
        else:
            p = _group_cross(sx, sy, idx)
        acc += p
        if kept is not None:
            kept[g] = p
    return acc, kept


def _cross_feature(sx: LinearStats, sy: LinearStats) -> float:
    """Return ``||Xc^T Yc||_F^2`` accumulated group by group in float64."""
    acc, _ = cross_products(sx, sy)
    return float(np.vdot(acc, acc))


def _gram(X: np.ndarray, mean: np.ndarray, chunk_rows: int) -> npt.NDArray[np.float64]:
    """Return ``Xc Xc^T`` with its diagonal zeroed, (n, n) float64, built in row slabs."""
    n = X.shape[0]
    K = np.empty((n, n), dtype=np.float64)
    Xc = np.asarray(X, dtype=np.float64) - mean
    for rows in row_chunks(n, chunk_rows):
        K[rows] = Xc[rows] @ Xc.T
    np.fill_diagonal(K, 0.0)
    return K


def _linear_cross(sx: LinearStats, sy: LinearStats) -> tuple[float, float]:
    """Return ``(tr(KL), tr(K~L~))``: the cross term with and without the diagonal.

    In Gram space the off-diagonal sum is accumulated directly and the diagonal ``a.b`` added
    for the biased term; in feature space (d <= n, where the diagonal does not dominate) it is
    ``||Xc^T Yc||_F^2 - a.b``.
    """
    ab = float(sx.sq_norms @ sy.sq_norms)
    if sx.gram is not None and sy.gram is not None:
        off = float(np.vdot(sx.gram, sy.gram))
        return off + ab, off
    full = _cross_feature(sx, sy)
    return full, full - ab


def _linear_unbiased(off: float, sx: LinearStats, sy: LinearStats) -> float:
    """Return ``n(n-3) HSIC_u``: with centred rows ``K~ 1 = -a`` (see the module docstring)."""
    if sx.n < 4:
        return float("nan")
    a, b = sx.sq_norms, sy.sq_norms
    return _u_statistic(off, float(a @ b), -float(a.sum()), -float(b.sum()), sx.n)


def linear_stats(
    X: Any, *, space: Literal["feature", "gram"] = "feature", chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> LinearStats:
    """Return the per-representation statistics of linear CKA for features ``X``.

    Args:
        X: features, (n, d), one row per sample (float16/32/64 array, tensor, or an
            ``h5py.Dataset`` of the cache, which is then read group by group in feature space).
        space: ``"feature"`` (cross-covariances) or ``"gram"`` (n×n Gram matrix, for d >> n).
        chunk_rows: rows per float64 chunk (the result does not depend on it beyond rounding).
    """
    return linear_stats_keeping(X, space=space, chunk_rows=chunk_rows)[0]


def linear_stats_keeping(
    X: Any,
    *,
    space: Literal["feature", "gram"] = "feature",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    keep: bool = False,
) -> tuple[LinearStats, npt.NDArray[np.float64] | None, npt.NDArray[np.float64] | None]:
    """:func:`linear_stats`, plus (feature space, ``keep``) the self products of the same pass.

    Returns ``(stats, P, C)``: ``P`` the per-group ``Xc_g^T Xc_g`` (K, d, d) and ``C`` their
    accumulated sum, as :func:`cross_products` gives them (None, None in Gram space or without
    ``keep``); ``stats`` is bitwise :func:`linear_stats`'s.
    """
    X = as_matrix(X, "X", lazy=True)
    n, d = X.shape
    mean = column_mean(X, chunk_rows)
    sq_norms = np.empty(n, dtype=np.float64)
    for rows in row_chunks(n, chunk_rows):
        Xc = X[rows].astype(np.float64) - mean
        sq_norms[rows] = np.einsum("ij,ij->i", Xc, Xc)
    gram = _gram(X, mean, chunk_rows) if space == "gram" else None
    groups = group_rows(accumulation_groups(n))
    blocks = None
    if gram is None and isinstance(X, np.ndarray):
        blocks = np.zeros((len(groups), max(idx.size for idx in groups), d))
        for g, idx in enumerate(groups):
            blocks[g, : idx.size] = X[idx]
            blocks[g, : idx.size] -= mean
    stats = LinearStats(
        X, mean, sq_norms, gram, 0.0, 0.0, _is_constant(X, chunk_rows), chunk_rows, groups, blocks
    )
    products = total = None
    if gram is None:  # as _linear_cross in feature space, keeping the group products
        total, products = cross_products(stats, stats, keep=keep)
        full = float(np.vdot(total, total))
        off = full - float(stats.sq_norms @ stats.sq_norms)
    else:
        full, off = _linear_cross(stats, stats)
    object.__setattr__(stats, "self_biased", full)
    object.__setattr__(stats, "self_unbiased", _linear_unbiased(off, stats, stats))
    return stats, products, (total if keep else None)


def linear_cka_from_stats(
    sx: LinearStats,
    sy: LinearStats,
    *,
    unbiased: bool = False,
    cross: npt.NDArray[np.float64] | None = None,
) -> float:
    """Return linear CKA from two representations' :class:`LinearStats` (same rows).

    The cross term is taken in Gram space when both carry a Gram matrix, else in feature space;
    ``cross``: ``Xc^T Yc`` when already accumulated (:func:`cross_products`, feature space).
    """
    n = sx.n
    if sy.n != n:
        raise ConfigError(
            f"cka: X has {n} rows but Y has {sy.n}; features of different subsets cannot be "
            "compared."
        )
    _check_n(n, unbiased, "cka")
    if sx.is_constant or sy.is_constant:
        return warn_degenerate("cka")
    if cross is None:
        full, off = _linear_cross(sx, sy)
    else:
        full = float(np.vdot(cross, cross))
        off = full - float(sx.sq_norms @ sy.sq_norms)
    if not unbiased:
        return full / np.sqrt(sx.self_biased * sy.self_biased)
    num = _linear_unbiased(off, sx, sy)
    denom = sx.self_unbiased * sy.self_unbiased
    if not denom > 0:
        return warn_degenerate("cka (unbiased self-HSIC <= 0)")
    return num / np.sqrt(denom)


# --------------------------------------------------------------------------------------------
# RBF kernel


def _sq_distances(
    Xc: np.ndarray, sq: np.ndarray, rows: slice, first_col: int = 0
) -> npt.NDArray[np.float64]:
    """Return the squared distances of rows ``rows`` to rows ``first_col:``, (slab, n -
    first_col), clamped at 0, self-distances exactly 0 (``first_col <= rows.start``)."""
    cols = slice(first_col, Xc.shape[0])
    D = sq[rows, None] + sq[None, cols] - 2.0 * (Xc[rows] @ Xc[cols].T)
    np.maximum(D, 0.0, out=D)
    idx = np.arange(rows.start, rows.stop)
    D[idx - rows.start, idx - first_col] = 0.0
    return D


def _upper_values(
    Xc: np.ndarray, sq: np.ndarray, slab_rows: int
) -> Iterator[npt.NDArray[np.float64]]:
    """Yield the strict-upper-triangle squared distances slab by slab (O(slab · n) each)."""
    for rows in row_chunks(Xc.shape[0], slab_rows):
        D = _sq_distances(Xc, sq, rows, first_col=rows.start)  # columns j >= i: half the work
        local = np.arange(rows.stop - rows.start)
        yield D[np.arange(D.shape[1])[None, :] > local[:, None]]


def _sample_bracket(
    Xc: np.ndarray, ranks: list[int], n_upper: int, n_sample: int = 100_000
) -> tuple[float, float]:
    """Return a value range likely to hold the upper-triangle values of ``ranks``.

    Read from the quantiles of squared distances of ``n_sample`` random pairs (fixed seed),
    widened by four binomial standard deviations: only a first guess, every decision after it
    uses exact counts.
    """
    n = Xc.shape[0]
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, n, size=(2, n_sample))
    keep = i != j
    i, j = i[keep], j[keep]
    # In chunks of pairs: gathering all pairs' rows at once took n_sample · d · 16 bytes
    # (1.2 GB at d = 768) and most of the median's time (benchmarks/rbf_median.py).
    sample = np.empty(i.size)
    for at in range(0, i.size, _SAMPLE_CHUNK):
        diff = Xc[i[at : at + _SAMPLE_CHUNK]] - Xc[j[at : at + _SAMPLE_CHUNK]]
        sample[at : at + _SAMPLE_CHUNK] = np.einsum("ij,ij->i", diff, diff)
    q_lo, q_hi = ranks[0] / n_upper, (ranks[-1] + 1) / n_upper
    half = 4.0 * np.sqrt(0.25 / max(sample.size, 1)) + 1.0 / max(sample.size, 1)
    lo, hi = np.quantile(sample, [max(q_lo - half, 0.0), min(q_hi + half, 1.0)])
    return float(lo), float(hi)


_BINS = 1024
_SAMPLE_CHUNK = 4096  # sampled pairs per gather in _sample_bracket
#: Default candidate budget of the median (values; 8 bytes each, 128 MB): up to this many
#: upper-triangle distances (n ≲ 5,800) are simply kept and partitioned in one pass.
_MEDIAN_BUDGET = 1 << 24
_ABS_BITS = np.int64(0x7FFFFFFFFFFFFFFF)  # clears the sign bit of -0.0


def _bits(value: float) -> int:
    """Return the bit pattern of a float ≥ 0 as an int: monotone in the value, one per float."""
    return int(np.float64(value).view(np.int64) & _ABS_BITS)


def _select_upper(
    Xc: np.ndarray,
    sq: np.ndarray,
    ranks: list[int],
    slab_rows: int,
    budget: int,
    bracket: tuple[float, float] | None = None,
) -> list[float]:
    """Return the values of 0-based ``ranks`` in the sorted strict upper triangle of distances.

    Exact selection without storing the n(n-1)/2 values: each pass over the slabs counts the
    values below a bracket ``[lo, hi]`` and keeps those inside it while they fit in ``budget``;
    when they do not, a histogram of them over the bracket's float bit patterns (so that even
    values one ulp apart fall in different bins) narrows the bracket for the next pass. Usually
    one pass after a sampled first bracket; memory O(slab · n + budget). Ranks whose values
    the histogram separates are then selected one by one (``bracket``: where to start).
    """
    n_upper = Xc.shape[0] * (Xc.shape[0] - 1) // 2
    if bracket is not None:
        lo, hi = bracket
    elif n_upper <= budget:
        lo, hi = -np.inf, np.inf
    else:
        lo, hi = _sample_bracket(Xc, ranks, n_upper)
    for _ in range(200):
        below = n_inside = 0
        inside: list[np.ndarray] = []
        v_min, v_max, in_min, in_max = np.inf, -np.inf, np.inf, -np.inf
        binned = bool(np.isfinite(lo) and np.isfinite(hi) and hi > lo)
        lo_bits = _bits(lo) if binned else 0
        width = -(-(_bits(hi) - lo_bits + 1) // _BINS) if binned else 1
        hist = np.zeros(_BINS, dtype=np.int64)
        for values in _upper_values(Xc, sq, slab_rows):
            if values.size:
                v_min, v_max = min(v_min, values.min()), max(v_max, values.max())
            below += int(np.count_nonzero(values < lo))
            sel = values[(values >= lo) & (values <= hi)]
            if not sel.size:
                continue
            in_min, in_max = min(in_min, sel.min()), max(in_max, sel.max())
            n_inside += sel.size
            if n_inside <= budget:
                inside.append(sel)
            else:
                inside.clear()
            if binned:
                bins = ((sel.view(np.int64) & _ABS_BITS) - lo_bits) // width
                hist += np.bincount(bins, minlength=_BINS)
        first, last = ranks[0] - below, ranks[-1] - below
        if first < 0 or last >= n_inside:  # the guess missed: widen to the side(s) missed
            lo = float(v_min) if first < 0 else lo
            hi = float(v_max) if last >= n_inside else hi
        elif n_inside <= budget:
            kth = [r - below for r in ranks]
            part = np.partition(np.concatenate(inside), kth)
            return [float(part[k]) for k in kth]
        elif in_min == in_max:  # every candidate is the same value
            return [float(in_min)] * len(ranks)
        elif not binned:
            lo, hi = float(in_min), float(in_max)
        else:  # too many candidates: keep only the bins holding the ranks
            cum = np.cumsum(hist)
            b_first = int(np.searchsorted(cum, first, side="right"))
            b_last = int(np.searchsorted(cum, last, side="right"))
            lo_new = np.int64(lo_bits + b_first * width).view(np.float64)
            hi_new = np.int64(min(lo_bits + (b_last + 1) * width - 1, _bits(hi))).view(np.float64)
            lo, hi = max(float(lo_new), float(in_min)), min(float(hi_new), float(in_max))
            if b_first != b_last:  # distinct values: one search per rank
                return [_select_upper(Xc, sq, [r], slab_rows, budget, (lo, hi))[0] for r in ranks]
    raise RuntimeError("median_sq_distance: selection did not converge (please report).")


def median_sq_distance(
    X: Any, *, slab_rows: int = DEFAULT_SLAB_ROWS, budget: int | None = None
) -> float:
    """Return the median of all n^2 squared Euclidean distances of the rows of ``X``.

    The n zeros of the diagonal count, as in Kornblith et al.'s ``np.median(sq_distances)``.
    Exact, in O(slab · n) memory: the order statistics of the strict upper triangle that the
    median needs are found by counting passes over distance slabs (:func:`_select_upper`),
    never by storing the n(n-1)/2 distances.

    Args:
        X: features, (n, d).
        slab_rows: distance rows per slab.
        budget: most candidate values kept at once (default ``max(slab_rows · n, 2^24)``,
            128 MB: the whole upper triangle up to n ≈ 5,800).
    """
    X = as_matrix(X, "X")
    check_finite(X, "median_sq_distance: X", hint=_UNDEFINED)
    Xc = X.astype(np.float64) - column_mean(X, slab_rows)
    return _median_of_centred(Xc, np.einsum("ij,ij->i", Xc, Xc), slab_rows, budget)


def _median_of_centred(Xc: np.ndarray, sq: np.ndarray, slab_rows: int, budget: int | None) -> float:
    """:func:`median_sq_distance` of centred float64 rows ``Xc`` with squared norms ``sq``."""
    n = Xc.shape[0]
    total = n * n
    positions = [(total - 1) // 2] if total % 2 else [total // 2 - 1, total // 2]
    # Sorted n×n multiset: the n diagonal zeros first, then every upper value twice.
    upper_ranks = sorted({(p - n) // 2 for p in positions if p >= n})
    budget = max(slab_rows * n, _MEDIAN_BUDGET) if budget is None else budget
    values = _select_upper(Xc, sq, upper_ranks, slab_rows, budget) if upper_ranks else []
    found = dict(zip(upper_ranks, values, strict=True))
    return float(np.mean([0.0 if p < n else found[(p - n) // 2] for p in positions]))


def _sampled_min(Xc: np.ndarray, sq: np.ndarray, n_rows: int = 256) -> float:
    """Return the smallest squared distance from ``n_rows`` random rows (fixed seed) to every
    other row: an upper bound of the true minimum for one GEMM of O(n_rows · n · d); 0.0 when
    n < 2."""
    n = Xc.shape[0]
    if n < 2:
        return 0.0
    rows = np.sort(np.random.default_rng(0).permutation(n)[: min(n, n_rows)])
    D = sq[rows, None] + sq[None, :] - 2.0 * (Xc[rows] @ Xc.T)
    np.maximum(D, 0.0, out=D)
    D[np.arange(rows.size), rows] = np.inf
    return float(D.min())


def _min_upper(Xc: np.ndarray, sq: np.ndarray, slab_rows: int) -> float:
    """Return the smallest squared distance between two different rows (0.0 when n < 2)."""
    m = np.inf
    for rows in row_chunks(Xc.shape[0], slab_rows):
        D = _sq_distances(Xc, sq, rows, first_col=rows.start)
        k = rows.stop - rows.start
        D[:, :k][np.tril_indices(k)] = np.inf  # keep the strict upper triangle only
        if D.size:
            m = min(m, float(D.min()))
    return float(m) if np.isfinite(m) else 0.0


@dataclass(frozen=True, eq=False)
class RbfStats:
    """Per-representation statistics of RBF CKA, computed once and reused for every pair.

    The kernel is kept as its *scaled off-diagonal part*: ``K = I + c · A`` with ``A_ij =
    exp(-(|x_i - x_j|^2 - m) / (2σ^2))`` for ``i != j``, ``A_ii = 0``, ``m`` the smallest
    squared distance between two different rows and ``c = exp(-m / (2σ^2))`` (so the largest
    entry of ``A`` is 1). The unbiased HSIC is bilinear in the diagonal-free kernels, so it is
    computed on ``A`` alone (``c`` cancels in CKA) and never underflows before ``c`` does; the
    biased one adds the unit diagonal back analytically (:func:`_rbf_biased`).

    Attributes:
        Xc: centred float64 features, (n, d).
        sq_norms: ``|x_i|^2`` of the centred rows, (n,).
        sigma: the resolved bandwidth σ (absolute).
        min_sq_distance: ``m``, the smallest squared distance between two different rows.
        row_sums: ``A 1``, (n,).
        self_cross: ``sum_ij A_ij^2``.
        self_biased / self_unbiased: ``tr(KHKH)`` and ``n(n-3) HSIC_u(A, A)`` (of the scaled
            kernel ``A``; NaN when n < 4).
        is_constant: every row equals the first, or σ resolved to 0.
        slab_rows: kernel rows per slab.
        min_is_bound: ``min_sq_distance`` is only an upper bound of ``m`` (sampled pairs), to
            be made exact by the streamed matrix from the kernel it forms anyway
            (:func:`~sim_consistency.similarity.streamed.rbf_cross_matrix`).
    """

    Xc: npt.NDArray[np.float64]
    sq_norms: npt.NDArray[np.float64]
    sigma: float
    min_sq_distance: float
    row_sums: npt.NDArray[np.float64]
    self_cross: float
    self_biased: float
    self_unbiased: float
    is_constant: bool
    slab_rows: int
    min_is_bound: bool = False

    @property
    def n(self) -> int:
        return int(self.Xc.shape[0])

    @property
    def log_scale(self) -> float:
        """``log c = -m / (2σ^2)``: the log of the largest off-diagonal kernel entry."""
        return -self.min_sq_distance / (2.0 * self.sigma * self.sigma)

    @property
    def underflows(self) -> bool:
        """Every off-diagonal kernel entry is 0 in float64 (``c`` underflows)."""
        return self.n >= 2 and float(np.exp(self.log_scale)) == 0.0

    def kernel_rows(
        self, rows: slice, first_col: int = 0, out: np.ndarray | None = None
    ) -> npt.NDArray[np.float64]:
        """Return rows ``rows`` of the scaled off-diagonal kernel ``A``, columns ``first_col:``.

        The exponent ``-(|x_i|^2 + |x_j|^2 - 2 x_i.x_j - m) / (2σ^2)`` is formed in place from
        the Gram slab (three elementwise passes, then ``exp``); rounding may leave entries of
        duplicate or nearest rows a few ulps above 1, which is harmless. ``first_col <=
        rows.start`` (the streamed matrix takes the upper block rows only); ``out``: a
        C-contiguous (slab, n - first_col) float64 buffer to write into.
        """
        inv = 0.5 / (self.sigma * self.sigma)
        cols = slice(first_col, self.n)
        E = np.matmul(self.Xc[rows], self.Xc[cols].T, out=out)
        E *= 2.0 * inv
        E -= (inv * (self.sq_norms[rows] - self.min_sq_distance))[:, None]
        E -= (inv * self.sq_norms[cols])[None, :]
        idx = np.arange(rows.stop - rows.start)
        # the diagonal is not part of A (exp(+m/2σ²) would overflow)
        E[idx, idx + rows.start - first_col] = -np.inf
        return np.exp(E, out=E)


def _rbf_cross(sx: RbfStats, sy: RbfStats) -> float:
    """Return ``sum_ij A_ij B_ij`` of two scaled off-diagonal kernels, one slab pass."""
    if sx is sy:
        return sx.self_cross
    total = 0.0
    for rows in row_chunks(sx.n, sx.slab_rows):
        total += float(np.vdot(sx.kernel_rows(rows), sy.kernel_rows(rows)))
    return total


def _rbf_biased(cross: float, sx: RbfStats, sy: RbfStats) -> float:
    """Return ``tr(KHLH)`` for ``K = I + c_x A``, ``L = I + c_y B`` (A, B diagonal-free).

    ``tr(KHLH) = (n-1) + c_x c_y [tr(AB) - 2/n a.b + S_a S_b / n^2] - (c_x S_a + c_y S_b) / n``
    with ``a = A1``, ``S_a = 1^T A 1``: the unit diagonal's part is exact, and terms whose scale
    underflows are below the rounding of ``n - 1``.
    """
    n = sx.n
    cx, cy = float(np.exp(sx.log_scale)), float(np.exp(sy.log_scale))
    sa, sb = float(sx.row_sums.sum()), float(sy.row_sums.sum())
    pair = cross - 2.0 / n * float(sx.row_sums @ sy.row_sums) + sa * sb / (n * n)
    return (n - 1) + float(np.exp(sx.log_scale + sy.log_scale)) * pair - (cx * sa + cy * sb) / n


def _rbf_unbiased(cross: float, sx: RbfStats, sy: RbfStats) -> float:
    """Return ``n(n-3) HSIC_u(A, B)`` of the scaled off-diagonal kernels (NaN when n < 4)."""
    if sx.n < 4:
        return float("nan")
    rx, ry = sx.row_sums, sy.row_sums
    return _u_statistic(cross, float(rx @ ry), float(rx.sum()), float(ry.sum()), sx.n)


def rbf_stats(
    X: Any,
    *,
    sigma: float | None = None,
    sigma_median: float | None = None,
    slab_rows: int = DEFAULT_SLAB_ROWS,
    self_terms: bool = True,
) -> RbfStats:
    """Return the per-representation statistics of RBF CKA for features ``X``.

    Args:
        X: features, (n, d).
        sigma: absolute bandwidth σ.
        sigma_median: relative bandwidth: ``σ^2 = sigma_median^2 · median(|x_i - x_j|^2)``.
            Exactly one of ``sigma`` and ``sigma_median`` is given.
        slab_rows: kernel rows per slab (memory O(slab_rows · n)).
        self_terms: also find ``m`` exactly and form the kernel once for ``row_sums`` and the
            self-HSIC; ``False`` takes ``m`` from sampled rows (an upper bound, cheap) and
            leaves all three to the streamed matrix, which gets them from the same pass as the
            cross terms (:func:`with_self_terms`).
    """
    if (sigma is None) == (sigma_median is None):
        raise ConfigError(
            f"cka: the RBF kernel needs exactly one of sigma (absolute) and sigma_median "
            f"(relative to the median distance) (got sigma={sigma}, sigma_median={sigma_median})."
        )
    width = sigma if sigma is not None else sigma_median
    if not (isinstance(width, int | float) and np.isfinite(width) and width > 0):
        raise ConfigError(f"cka: the RBF bandwidth must be a positive number (got {width!r}).")
    X = as_matrix(X, "X")
    check_finite(X, "cka (rbf): X", hint=_UNDEFINED)
    is_constant = _is_constant(X, slab_rows)
    Xc = X.astype(np.float64) - column_mean(X, slab_rows)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    if sigma is None:
        median = _median_of_centred(Xc, sq, slab_rows, None)
        sigma = float(sigma_median * np.sqrt(median))
        is_constant = is_constant or median == 0.0
    m = _min_upper(Xc, sq, slab_rows) if self_terms else _sampled_min(Xc, sq)
    n = Xc.shape[0]
    stats = RbfStats(
        Xc,
        sq,
        float(sigma) if sigma else 1.0,
        m,
        np.zeros(n),
        0.0,
        0.0,
        0.0,
        is_constant,
        slab_rows,
        not self_terms,
    )
    if not self_terms:
        return stats
    self_cross = 0.0
    row_sums = np.empty(n)
    for rows in row_chunks(n, slab_rows):
        A = stats.kernel_rows(rows)
        self_cross += float(np.vdot(A, A))
        row_sums[rows] = A.sum(axis=1)
    return with_self_terms(stats, row_sums, self_cross)


def with_self_terms(
    stats: RbfStats, row_sums: np.ndarray, self_cross: float, min_sq_distance: float | None = None
) -> RbfStats:
    """Return ``stats`` completed with ``A 1`` and ``sum_ij A_ij^2`` (and the self-HSICs), and
    with the exact ``m`` when given (``A`` scaled by it)."""
    if min_sq_distance is not None:
        object.__setattr__(stats, "min_sq_distance", float(min_sq_distance))
        object.__setattr__(stats, "min_is_bound", False)
    stats.row_sums[:] = row_sums
    object.__setattr__(stats, "self_cross", float(self_cross))
    object.__setattr__(stats, "self_biased", _rbf_biased(self_cross, stats, stats))
    object.__setattr__(stats, "self_unbiased", _rbf_unbiased(self_cross, stats, stats))
    return stats


def rbf_cka_from_stats(
    sx: RbfStats, sy: RbfStats, *, unbiased: bool = False, cross: float | None = None
) -> float:
    """Return RBF CKA from two representations' :class:`RbfStats` (one slab pass over n×n).

    ``cross`` is ``sum_ij A_ij B_ij`` when already known (a streamed model×model matrix,
    :func:`~sim_consistency.similarity.streamed.rbf_cross_matrix`); else one slab pass forms it.

    The unbiased estimator is NaN with a :class:`BandwidthTooSmallWarning` when a kernel
    underflows (every off-diagonal entry 0 in float64); the biased one is then exactly what its
    formula gives for ``K = I``.
    """
    if sy.n != sx.n:
        raise ConfigError(
            f"cka: X has {sx.n} rows but Y has {sy.n}; features of different subsets cannot be "
            "compared."
        )
    _check_n(sx.n, unbiased, "cka")
    if sx.is_constant or sy.is_constant:
        return warn_degenerate("cka")
    if unbiased:
        for s in (sx, sy):
            if s.underflows:
                return warn_bandwidth_too_small("cka (rbf, unbiased)", s.sigma, s.min_sq_distance)
        denom = sx.self_unbiased * sy.self_unbiased
        if not denom > 0:
            return warn_degenerate("cka (unbiased self-HSIC <= 0)")
        return _rbf_unbiased(_cross_or(cross, sx, sy), sx, sy) / np.sqrt(denom)
    denom = sx.self_biased * sy.self_biased
    if not denom > 0:
        return warn_degenerate("cka")
    return _rbf_biased(_cross_or(cross, sx, sy), sx, sy) / np.sqrt(denom)


def _cross_or(cross: float | None, sx: RbfStats, sy: RbfStats) -> float:
    return _rbf_cross(sx, sy) if cross is None else float(cross)


# --------------------------------------------------------------------------------------------
# Public entry point


def cka(
    X: Any,
    Y: Any,
    *,
    kernel: Literal["linear", "rbf"] = "linear",
    unbiased: bool = False,
    sigma: float | None = None,
    sigma_median: float | None = None,
    space: Space = "auto",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> float:
    """Return the CKA similarity of two representations of the same samples.

    Estimators: biased HSIC (Kornblith et al., 2019, eq. 4) or the unbiased HSIC of Song et al.
    (2012, eq. 5), see the module docstring. Accumulation is float64 whatever the input dtype.

    Args:
        X: features of model A, (n, d_x), one row per sample (numpy array, torch tensor, or
            for the linear kernel an ``h5py.Dataset`` streamed in chunks of ``chunk_rows``).
        Y: features of model B, (n, d_y), the same rows in the same order.
        kernel: ``"linear"`` or ``"rbf"``.
        unbiased: use the unbiased HSIC estimator (needs n >= 4).
        sigma: RBF only: absolute bandwidth σ of ``exp(-|x - x'|^2 / (2σ^2))``.
        sigma_median: RBF only: ``σ^2 = sigma_median^2 · median`` of all n^2 squared distances.
        space: linear only: ``"feature"`` (X^T Y, O(d_x d_y) memory), ``"gram"`` (n×n) or
            ``"auto"`` (Gram space when n is below the median width, see :func:`choose_space`).
        chunk_rows: rows per float64 chunk (linear) or per kernel slab (RBF).

    Returns:
        CKA in [0, 1] for the biased estimator (the unbiased one can dip slightly below 0);
        NaN with a :class:`DegenerateRepresentationWarning` when a representation is constant,
        or, unbiased RBF only, with a :class:`BandwidthTooSmallWarning` when σ is so small that
        every off-diagonal kernel entry underflows to 0.

    Raises:
        ConfigError: different row counts, n < 4 with ``unbiased``, an unknown kernel, or a
            missing/invalid bandwidth for the RBF kernel.
    """
    X, Y = check_pair(X, Y, "cka", lazy=kernel == "linear")
    if kernel == "linear":
        if sigma is not None or sigma_median is not None:
            raise ConfigError("cka: sigma / sigma_median apply to kernel='rbf' only.")
        _check_n(X.shape[0], unbiased, "cka")
        if space == "auto":
            space = choose_space(X.shape[0], [X.shape[1], Y.shape[1]])
        if space not in ("feature", "gram"):
            raise ConfigError(f"cka: space must be auto, feature or gram (got {space!r}).")
        sx = linear_stats(X, space=space, chunk_rows=chunk_rows)
        sy = linear_stats(Y, space=space, chunk_rows=chunk_rows)
        return linear_cka_from_stats(sx, sy, unbiased=unbiased)
    if kernel == "rbf":
        _check_n(X.shape[0], unbiased, "cka")
        rx = rbf_stats(X, sigma=sigma, sigma_median=sigma_median, slab_rows=chunk_rows)
        ry = rbf_stats(Y, sigma=sigma, sigma_median=sigma_median, slab_rows=chunk_rows)
        return rbf_cka_from_stats(rx, ry, unbiased=unbiased)
    raise ConfigError(f"cka: unknown kernel {kernel!r}. Choose 'linear' or 'rbf'.")
