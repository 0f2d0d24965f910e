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
``<X X^T, Y Y^T>_F``, O(n^2 (d_x + d_y)) time, cheaper when ``d >> n``. The two agree to
rounding (tested ≤ 1e-10). Per-representation work (mean, row norms, self-HSIC, the Gram
matrix) lives in :class:`LinearStats`, so a model×model matrix or a block×block grid computes
it once per representation and only the cross term per pair.

RBF kernel. ``k(x, x') = exp(-|x - x'|^2 / (2 σ^2))`` with an absolute σ (Rep2Rep's "local"
CKA uses σ = 0.4 on unit-norm features) or ``σ^2 = sigma_median^2 · median`` of all n^2 squared
distances (Kornblith et al.'s convention; the exact median is selected by counting passes over
distance slabs). The n×n kernels are never stored: rows are produced in slabs of ``slab_rows``
and reduced into the sums the estimators need, so memory stays O(slab · n).

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
from sim_consistency.similarity._arrays import (
    DEFAULT_CHUNK_ROWS,
    as_matrix,
    check_finite,
    check_pair,
    column_mean,
    row_chunks,
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
    "median_sq_distance",
    "choose_space",
]

Space = Literal["auto", "feature", "gram"]
DEFAULT_SLAB_ROWS = 1024


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


def _unbiased_numerator(cross: float, ab: float, sum_a: float, sum_b: float, n: int) -> float:
    """Return ``n(n-3) HSIC_u`` for centred linear kernels (see the module docstring)."""
    return cross - n / (n - 2) * ab + sum_a * sum_b / ((n - 1) * (n - 2))


# --------------------------------------------------------------------------------------------
# Linear kernel


@dataclass(frozen=True, eq=False)
class LinearStats:
    """Per-representation statistics of linear CKA, computed once and reused for every pair.

    Attributes:
        X: the features as given, (n, d) (not copied; cast to float64 chunk by chunk).
        mean: float64 column mean, (d,).
        sq_norms: ``|x_i - mean|^2`` in float64, (n,).
        gram: centred Gram matrix ``Xc Xc^T`` (n, n) float64 in Gram space, else ``None``.
        self_biased: ``||Xc^T Xc||_F^2`` (= n-free numerator of the biased HSIC(X, X)).
        self_unbiased: ``n(n-3) HSIC_u(X, X)``.
        is_constant: every row equals the first (CKA is undefined: NaN with a warning).
    """

    X: np.ndarray
    mean: npt.NDArray[np.float64]
    sq_norms: npt.NDArray[np.float64]
    gram: npt.NDArray[np.float64] | None
    self_biased: float
    self_unbiased: float
    is_constant: bool
    chunk_rows: int

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    def centred(self, rows: slice) -> npt.NDArray[np.float64]:
        """Return rows ``rows`` of the centred features in float64."""
        return self.X[rows].astype(np.float64) - self.mean


def _cross_feature(sx: LinearStats, sy: LinearStats) -> float:
    """Return ``||Xc^T Yc||_F^2`` accumulated over row chunks in float64."""
    acc = np.zeros((sx.X.shape[1], sy.X.shape[1]), dtype=np.float64)
    for rows in row_chunks(sx.n, sx.chunk_rows):
        acc += sx.centred(rows).T @ sy.centred(rows)
    return float(np.vdot(acc, acc))


def _gram(X: np.ndarray, mean: np.ndarray, chunk_rows: int) -> npt.NDArray[np.float64]:
    """Return the centred Gram matrix ``Xc Xc^T``, (n, n) float64, built in row slabs."""
    n = X.shape[0]
    K = np.empty((n, n), dtype=np.float64)
    Xc = np.asarray(X, dtype=np.float64) - mean
    for rows in row_chunks(n, chunk_rows):
        K[rows] = Xc[rows] @ Xc.T
    return K


def linear_stats(
    X: Any, *, space: Literal["feature", "gram"] = "feature", chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> LinearStats:
    """Return the per-representation statistics of linear CKA for features ``X``.

    Args:
        X: features, (n, d), one row per sample (float16/32/64 array, tensor, or an
            ``h5py.Dataset`` of the cache, which is then read chunk by chunk in feature space).
        space: ``"feature"`` (cross-covariances) or ``"gram"`` (n×n Gram matrix, for d >> n).
        chunk_rows: rows per float64 chunk (the result does not depend on it beyond rounding).
    """
    X = as_matrix(X, "X", lazy=True)
    n, d = X.shape
    mean = column_mean(X, chunk_rows)
    sq_norms = np.empty(n, dtype=np.float64)
    for rows in row_chunks(n, chunk_rows):
        Xc = X[rows].astype(np.float64) - mean
        sq_norms[rows] = np.einsum("ij,ij->i", Xc, Xc)
    gram = _gram(X, mean, chunk_rows) if space == "gram" else None
    stats = LinearStats(X, mean, sq_norms, gram, 0.0, 0.0, _is_constant(X, chunk_rows), chunk_rows)
    self_cross = float(np.vdot(gram, gram)) if gram is not None else _cross_feature(stats, stats)
    ab = float(sq_norms @ sq_norms)
    sum_a = float(sq_norms.sum())
    self_unbiased = _unbiased_numerator(self_cross, ab, sum_a, sum_a, n) if n >= 4 else float("nan")
    object.__setattr__(stats, "self_biased", self_cross)
    object.__setattr__(stats, "self_unbiased", self_unbiased)
    return stats


def linear_cka_from_stats(sx: LinearStats, sy: LinearStats, *, unbiased: bool = False) -> float:
    """Return linear CKA from two representations' :class:`LinearStats` (same rows).

    The cross term is taken in Gram space when both carry a Gram matrix, else in feature space.
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
    if sx.gram is not None and sy.gram is not None:
        cross = float(np.vdot(sx.gram, sy.gram))
    else:
        cross = _cross_feature(sx, sy)
    if not unbiased:
        return cross / np.sqrt(sx.self_biased * sy.self_biased)
    num = _unbiased_numerator(
        cross,
        float(sx.sq_norms @ sy.sq_norms),
        float(sx.sq_norms.sum()),
        float(sy.sq_norms.sum()),
        n,
    )
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
    diff = Xc[i[keep]] - Xc[j[keep]]
    sample = np.einsum("ij,ij->i", diff, diff)
    q_lo, q_hi = ranks[0] / n_upper, (ranks[-1] + 1) / n_upper
    half = 4.0 * np.sqrt(0.25 / max(sample.size, 1)) + 1.0 / max(sample.size, 1)
    lo, hi = np.quantile(sample, [max(q_lo - half, 0.0), min(q_hi + half, 1.0)])
    return float(lo), float(hi)


_BINS = 1024
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
        budget: most candidate values kept at once (default ``max(slab_rows · n, 2^20)``).
    """
    X = as_matrix(X, "X")
    check_finite(X, "X", "median_sq_distance")
    Xc = X.astype(np.float64) - column_mean(X, slab_rows)
    return _median_of_centred(Xc, np.einsum("ij,ij->i", Xc, Xc), slab_rows, budget)


def _median_of_centred(Xc: np.ndarray, sq: np.ndarray, slab_rows: int, budget: int | None) -> float:
    """:func:`median_sq_distance` of centred float64 rows ``Xc`` with squared norms ``sq``."""
    n = Xc.shape[0]
    total = n * n
    positions = [(total - 1) // 2] if total % 2 else [total // 2 - 1, total // 2]
    # Sorted n×n multiset: the n diagonal zeros first, then every upper value twice.
    upper_ranks = sorted({(p - n) // 2 for p in positions if p >= n})
    budget = max(slab_rows * n, 1 << 20) if budget is None else budget
    values = _select_upper(Xc, sq, upper_ranks, slab_rows, budget) if upper_ranks else []
    found = dict(zip(upper_ranks, values, strict=True))
    return float(np.mean([0.0 if p < n else found[(p - n) // 2] for p in positions]))


@dataclass(frozen=True, eq=False)
class RbfStats:
    """Per-representation statistics of RBF CKA (centred float64 features, norms, σ, self-HSIC).

    Attributes:
        Xc: centred float64 features, (n, d).
        sq_norms: ``|x_i|^2`` of the centred rows, (n,).
        sigma: the resolved bandwidth σ (absolute).
        self_biased / self_unbiased: ``tr(KHKH)`` and ``n(n-3) HSIC_u(K, K)``.
        is_constant: every row equals the first, or σ resolved to 0.
    """

    Xc: npt.NDArray[np.float64]
    sq_norms: npt.NDArray[np.float64]
    sigma: float
    self_biased: float
    self_unbiased: float
    is_constant: bool
    slab_rows: int

    @property
    def n(self) -> int:
        return int(self.Xc.shape[0])

    def kernel_rows(self, rows: slice) -> npt.NDArray[np.float64]:
        """Return rows ``rows`` of the RBF kernel matrix, (slab, n)."""
        D = _sq_distances(self.Xc, self.sq_norms, rows)
        D *= -0.5 / (self.sigma * self.sigma)
        return np.exp(D, out=D)


def _rbf_sums(sx: RbfStats, sy: RbfStats) -> tuple[float, float]:
    """Return ``(tr(KHLH), n(n-3) HSIC_u)`` from one slab pass over both kernels."""
    n = sx.n
    sum_kl = 0.0
    diag_kl = 0.0
    rk = np.empty(n)
    rl = np.empty(n)
    dk = np.empty(n)
    dl = np.empty(n)
    same = sx is sy
    for rows in row_chunks(n, sx.slab_rows):
        K = sx.kernel_rows(rows)
        L = K if same else sy.kernel_rows(rows)
        sum_kl += float(np.vdot(K, L))
        rk[rows] = K.sum(axis=1)
        rl[rows] = L.sum(axis=1)
        idx = np.arange(rows.stop - rows.start)
        dk[rows] = K[idx, idx + rows.start]
        dl[rows] = L[idx, idx + rows.start]
    diag_kl = float(dk @ dl)
    biased = sum_kl - 2.0 / n * float(rk @ rl) + float(rk.sum()) * float(rl.sum()) / (n * n)
    if n < 4:
        return biased, float("nan")
    rk_t, rl_t = rk - dk, rl - dl
    unbiased = (
        (sum_kl - diag_kl)
        + float(rk_t.sum()) * float(rl_t.sum()) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * float(rk_t @ rl_t)
    )
    return biased, unbiased


def rbf_stats(
    X: Any,
    *,
    sigma: float | None = None,
    sigma_median: float | None = None,
    slab_rows: int = DEFAULT_SLAB_ROWS,
) -> RbfStats:
    """Return the per-representation statistics of RBF CKA for features ``X``.

    Args:
        X: features, (n, d).
        sigma: absolute bandwidth σ.
        sigma_median: relative bandwidth: ``σ^2 = sigma_median^2 · median(|x_i - x_j|^2)``.
            Exactly one of ``sigma`` and ``sigma_median`` is given.
        slab_rows: kernel rows per slab (memory O(slab_rows · n)).
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
    check_finite(X, "X", "cka (rbf)")
    is_constant = _is_constant(X, slab_rows)
    Xc = X.astype(np.float64) - column_mean(X, slab_rows)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    if sigma is None:
        median = _median_of_centred(Xc, sq, slab_rows, None)
        sigma = float(sigma_median * np.sqrt(median))
        is_constant = is_constant or median == 0.0
    stats = RbfStats(Xc, sq, float(sigma) if sigma else 1.0, 0.0, 0.0, is_constant, slab_rows)
    biased, unbiased = _rbf_sums(stats, stats)
    object.__setattr__(stats, "self_biased", biased)
    object.__setattr__(stats, "self_unbiased", unbiased)
    return stats


def rbf_cka_from_stats(sx: RbfStats, sy: RbfStats, *, unbiased: bool = False) -> float:
    """Return RBF CKA from two representations' :class:`RbfStats` (one slab pass over n×n)."""
    if sy.n != sx.n:
        raise ConfigError(
            f"cka: X has {sx.n} rows but Y has {sy.n}; features of different subsets cannot be "
            "compared."
        )
    _check_n(sx.n, unbiased, "cka")
    if sx.is_constant or sy.is_constant:
        return warn_degenerate("cka")
    biased, unb = _rbf_sums(sx, sy)
    if unbiased:
        denom = sx.self_unbiased * sy.self_unbiased
        if not denom > 0:
            return warn_degenerate("cka (unbiased self-HSIC <= 0)")
        return unb / np.sqrt(denom)
    denom = sx.self_biased * sy.self_biased
    if not denom > 0:
        return warn_degenerate("cka")
    return biased / np.sqrt(denom)


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
        NaN with a :class:`DegenerateRepresentationWarning` when a representation is constant.

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
