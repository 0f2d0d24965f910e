"""Representational similarity analysis (RSA; Kriegeskorte et al., 2008).

Each representation is summarised by its representational dissimilarity matrix (RDM) over the
samples — ``1 - Pearson correlation`` between the rows (``rdm="correlation"``, Rep2Rep's
default) or ``1 - cosine similarity`` (``rdm="cosine"``) — and two RDMs are compared by the
Spearman (average ranks for ties, as ``scipy.stats.spearmanr``, after rounding the
dissimilarities to 12 decimals so that exact ties survive rounding noise) or Pearson correlation of their
strict upper triangles. The RDM is built in row slabs in float64; its upper triangle,
n(n-1)/2 values, is the per-representation statistic (:class:`RsaStats`), standardised once so
that every pair costs one dot product.

For model×model matrices the same triangle is kept compactly (:class:`RdmVector`): Spearman as
exact **doubled** average ranks (ties' half ranks stay integers) in int32 (int64 beyond
n ≈ 46,000), Pearson as float64 centred values, each with the exact norm of its centred form,
so that :mod:`~sim_consistency.similarity.streamed` can stream, spill and tile them. The
doubled ranks come from one 64-bit sort of packed (rounded value, index) keys (a stable radix
pass into buckets first when the two do not fit 64 bits), about 2× faster than an argsort;
they equal ``2 * rankdata(np.round(v, 12), method="average")`` exactly (tested).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

from sim_consistency.errors import ConfigError
from sim_consistency.similarity._arrays import as_matrix, check_pair, row_chunks, warn_degenerate

__all__ = [
    "rsa",
    "rdm_upper",
    "RsaStats",
    "rsa_stats",
    "rsa_from_stats",
    "doubled_ranks",
    "RdmVector",
    "rdm_vector",
    "rdm_vector_and_order",
    "tied_runs",
    "rdm_vector_dtype",
]

RDMS = ("correlation", "cosine")
CORRS = ("pearson", "spearman")
DEFAULT_SLAB_ROWS = 1024
_DECIMALS = 12


def rdm_upper(
    X: Any,
    *,
    rdm: Literal["correlation", "cosine"] = "correlation",
    slab_rows: int = DEFAULT_SLAB_ROWS,
) -> npt.NDArray[np.float64]:
    """Return the strict upper triangle of the RDM of ``X``, (n(n-1)/2,), row-major order.

    Args:
        X: features, (n, d), one row per sample.
        rdm: ``"correlation"`` (1 - Pearson r between rows) or ``"cosine"`` (1 - cos).
        slab_rows: RDM rows computed at once (memory O(slab_rows · n) besides the output).

    Returns:
        The dissimilarities ``D[i, j]`` for ``i < j``; NaN where a row has zero variance
        (correlation) or zero norm (cosine).
    """
    if rdm not in RDMS:
        raise ConfigError(f"rsa: unknown rdm {rdm!r}. Choose one of {', '.join(RDMS)}.")
    Z = as_matrix(X, "X").astype(np.float64)
    if rdm == "correlation":
        Z = Z - Z.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(Z, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        Z = np.where(norms > 0, Z / norms, np.nan)
    n = Z.shape[0]
    out = np.empty(n * (n - 1) // 2, dtype=np.float64)
    pos = 0
    for rows in row_chunks(n, slab_rows):
        S = Z[rows] @ Z[rows.start :].T  # the block-upper part only (the RDM is symmetric)
        for i_local, i in enumerate(range(rows.start, rows.stop)):
            tail = S[i_local, i + 1 - rows.start :]
            out[pos : pos + tail.size] = 1.0 - tail
            pos += tail.size
    return out


@dataclass(frozen=True, eq=False)
class RsaStats:
    """One representation's RDM upper triangle, ranked (Spearman) and standardised.

    Attributes:
        z: ``(v - mean(v)) / ||v - mean(v)||`` of the (ranked) upper triangle, or ``None`` when
            it is undefined (constant RDM or NaN dissimilarities).
        n: number of samples.
    """

    z: npt.NDArray[np.float64] | None
    n: int
    corr: str


def rsa_stats(
    X: Any,
    *,
    rdm: Literal["correlation", "cosine"] = "correlation",
    corr: Literal["pearson", "spearman"] = "spearman",
) -> RsaStats:
    """Return the per-representation statistics of RSA for features ``X``."""
    if corr not in CORRS:
        raise ConfigError(f"rsa: unknown corr {corr!r}. Choose one of {', '.join(CORRS)}.")
    X = as_matrix(X, "X")
    if X.shape[0] < 3:
        raise ConfigError(f"rsa: needs at least 3 samples (got n={X.shape[0]}).")
    v = rdm_upper(X, rdm=rdm)
    if not np.isfinite(v).all():
        return RsaStats(None, X.shape[0], corr)
    if corr == "spearman":
        # Round first so that dissimilarities equal in exact arithmetic tie exactly.
        v = rankdata(np.round(v, _DECIMALS), method="average").astype(np.float64)
    v = v - v.mean()
    norm = float(np.linalg.norm(v))
    return RsaStats(v / norm if norm > 0 else None, X.shape[0], corr)


def rsa_from_stats(sx: RsaStats, sy: RsaStats, *, cross: float | None = None) -> float:
    """Return the RSA score of two representations from their :class:`RsaStats`.

    ``cross`` is ``z_x . z_y`` when already known (a streamed model×model matrix).
    """
    if sx.n != sy.n:
        raise ConfigError(
            f"rsa: X has {sx.n} rows but Y has {sy.n}; features of different subsets cannot be "
            "compared."
        )
    if sx.corr != sy.corr:
        raise ConfigError(f"rsa: statistics built for {sx.corr} and {sy.corr} cannot be mixed.")
    if sx.z is None or sy.z is None:
        return warn_degenerate("rsa (constant RDM or a row with zero variance)")
    dot = float(sx.z @ sy.z) if cross is None else float(cross)
    return float(np.clip(dot, -1.0, 1.0))


def rsa(
    X: Any,
    Y: Any,
    *,
    rdm: Literal["correlation", "cosine"] = "correlation",
    corr: Literal["pearson", "spearman"] = "spearman",
) -> float:
    """Return the RSA similarity: correlation of the upper triangles of the two RDMs.

    Args:
        X: features of model A, (n, d_x), one row per sample.
        Y: features of model B, (n, d_y), the same rows in the same order.
        rdm: ``"correlation"`` (1 - Pearson r between samples) or ``"cosine"``.
        corr: ``"spearman"`` (average ranks for ties) or ``"pearson"``.

    Returns:
        A correlation in [-1, 1]; NaN with a warning when an RDM is constant or undefined.

    Raises:
        ConfigError: different row counts, n < 3, or an unknown ``rdm`` / ``corr``.
    """
    X, Y = check_pair(X, Y, "rsa")
    return rsa_from_stats(rsa_stats(X, rdm=rdm, corr=corr), rsa_stats(Y, rdm=rdm, corr=corr))


# -- compact, exact form for streamed model×model matrices ------------------------------------


def _rounded_keys(v: npt.NDArray[np.float64], *, consume: bool) -> npt.NDArray[np.uint64] | None:
    """Return ``rint(v * 1e12) - min`` as uint64 (the order and ties of ``np.round(v, 12)``),
    or ``None`` when the values are too large for 64-bit keys. ``consume``: ``v`` is scratch."""
    if v.size == 0 or float(np.abs(v).max()) >= 2.0**50 / 10.0**_DECIMALS:
        return None
    k = np.multiply(v, 10.0**_DECIMALS, out=v if consume else None)
    np.rint(k, out=k)
    keys = k.astype(np.int64)
    del k
    keys -= keys.min()
    return keys.view(np.uint64)


def _sorted_buckets(keys: npt.NDArray[np.uint64]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(start, order, sorted keys)`` runs that together sort ``keys`` (ties by index).

    Sorts packed ``key << b | index`` words (a plain 64-bit sort, no argsort). When key and
    index bits exceed 64, the keys' top bits split them into buckets (in key order, equal keys
    in one bucket) whose remaining bits fit, and each bucket is sorted the same way; ``start``
    is the bucket's first position in the whole sorted order.
    """
    length = keys.size
    idx_bits = max(1, (length - 1).bit_length())
    key_bits = int(keys.max()).bit_length()
    h = max(0, key_bits - (64 - idx_bits))
    shift = np.uint64(idx_bits)
    idx_mask = np.uint64((1 << idx_bits) - 1)
    if h == 0:
        packed = keys << shift
        packed |= np.arange(length, dtype=np.uint64)
        packed.sort()
        order = (packed & idx_mask).astype(np.int64)
        packed >>= shift
        yield 0, order, packed
        return
    if h > 12:  # absurd ranges: a plain stable argsort
        order = np.argsort(keys, kind="stable")
        yield 0, order, keys[order]
        return
    low_bits = np.uint64(key_bits - h)
    low_mask = np.uint64((1 << (key_bits - h)) - 1)
    bucket = (keys >> low_bits).astype(np.uint16)
    start = 0
    for b in np.unique(bucket):
        idx = np.flatnonzero(bucket == b)  # ascending: the gathers below stream
        packed = (keys[idx] & low_mask) << shift
        packed |= np.arange(idx.size, dtype=np.uint64)
        packed.sort()
        order = idx[(packed & idx_mask).astype(np.int64)]
        packed >>= shift
        packed |= np.uint64(b) << low_bits
        yield start, order, packed
        start += idx.size


def _doubled_ranks(
    v: npt.NDArray[np.float64], dtype: Any, *, consume: bool = False, keep_order: bool = False
) -> tuple[np.ndarray, int, np.ndarray | None, Any]:
    """Return ``(2 × average ranks, sum of t^3 - t over tie groups, order, runs)`` of
    ``round(v, 12)``.

    With ``keep_order`` also the sorted order (``dtype`` indices) and, when some values are
    tied, :func:`tied_runs` of the sorted values, else None for both.
    """
    length = v.size
    keys = _rounded_keys(v, consume=consume)
    runs: Iterator[tuple[int, np.ndarray, np.ndarray]]
    if keys is None:
        order = np.argsort(np.round(v, _DECIMALS), kind="stable")
        runs = iter([(0, order, np.round(v[order], _DECIMALS))])
    else:
        runs = _sorted_buckets(keys)
    ranks = np.empty(length, dtype=dtype)
    ties = 0
    orders: list[np.ndarray] = []
    news: list[np.ndarray] = []
    for first, order, sorted_keys in runs:
        k = sorted_keys.size
        new = np.empty(k, dtype=bool)
        new[:1] = True
        np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        if keep_order:
            orders.append(order.astype(dtype))
            news.append(new)
        if starts.size == k:  # no ties
            ranks[order] = np.arange(2 * first + 2, 2 * (first + k) + 1, 2, dtype=dtype)
            continue
        sizes = np.diff(np.append(starts, k))
        # a group at sorted positions s..s+t-1 (0-based) has average rank s + (t + 1) / 2
        ranks[order] = np.repeat((2 * (starts + first) + sizes + 1).astype(dtype), sizes)
        tied = sizes[sizes > 1].astype(object)  # Python ints: exact
        ties += int(sum(t * t * t - t for t in tied))
    if not keep_order:
        return ranks, ties, None, None
    full_order = np.concatenate(orders) if orders else np.empty(0, dtype=dtype)
    # buckets hold different keys, so each bucket's first value starts a run
    return ranks, ties, full_order, tied_runs(np.concatenate(news)) if ties else None


def tied_runs(starts_run: npt.NDArray[np.bool_]) -> tuple[np.ndarray, np.ndarray] | None:
    """Return ``(positions, run)`` of the sorted positions inside runs of two or more equal
    values, ascending, and the run (0, 1, ...) of each; None when no value repeats.

    ``starts_run[i]`` is True where sorted position ``i`` holds a new value.
    """
    starts = np.flatnonzero(starts_run)
    sizes = np.diff(np.append(starts, starts_run.size))
    tied = sizes > 1
    if not tied.any():
        return None
    first, size = starts[tied], sizes[tied]
    run = np.repeat(np.arange(first.size, dtype=np.int64), size)
    offset = np.arange(int(size.sum()), dtype=np.int64) - np.repeat(np.cumsum(size) - size, size)
    return np.repeat(first, size).astype(np.int64) + offset, run


def rdm_vector_dtype(corr: str, n: int) -> np.dtype:
    """Return the dtype of :attr:`RdmVector.values` for ``n`` samples."""
    if corr == "pearson":
        return np.dtype(np.float64)
    length = n * (n - 1) // 2
    return np.dtype(np.int32 if 2 * length + 1 < 2**31 else np.int64)


def doubled_ranks(v: Any) -> np.ndarray:
    """Return twice the average ranks (1-based) of ``round(v, 12)``: exact integers.

    Equals ``2 * scipy.stats.rankdata(np.round(v, 12), method="average")``; int32 while the
    ranks fit (length < 2^30), else int64.
    """
    v = np.asarray(v, dtype=np.float64).ravel()
    dtype = np.int32 if 2 * v.size + 1 < 2**31 else np.int64
    return _doubled_ranks(v, dtype)[0]


@dataclass(frozen=True, eq=False)
class RdmVector:
    """One representation's RDM upper triangle as the streamed RSA matrix reads it.

    Attributes:
        values: Spearman: doubled average ranks (int32/int64, exact); Pearson: the centred
            dissimilarities (float64). ``None`` when the correlation is undefined (constant
            RDM or NaN dissimilarities).
        offset: subtracted from ``values`` to centre them (``L + 1`` for doubled ranks of
            ``L`` entries, 0 for Pearson).
        norm: Euclidean norm of ``values - offset`` (exact for ranks: from the tie counts).
        n: number of samples.
        corr: ``"spearman"`` or ``"pearson"``.
    """

    values: np.ndarray | None
    offset: float
    norm: float
    n: int
    corr: str


def rdm_vector(
    X: Any,
    *,
    rdm: Literal["correlation", "cosine"] = "correlation",
    corr: Literal["pearson", "spearman"] = "spearman",
) -> RdmVector:
    """Return the compact RSA statistic of features ``X`` (see :class:`RdmVector`).

    ``(values_a - offset_a) . (values_b - offset_b) / (norm_a norm_b)`` is the same RSA score
    as :func:`rsa` (Pearson of the ranks for Spearman), to rounding.
    """
    return _rdm_vector(X, rdm, corr, keep_order=False)[0]


def rdm_vector_and_order(
    X: Any,
    *,
    rdm: Literal["correlation", "cosine"] = "correlation",
    corr: Literal["pearson", "spearman"] = "spearman",
) -> tuple[RdmVector, npt.NDArray[np.float64] | None, np.ndarray | None, Any]:
    """Return :func:`rdm_vector` of ``X`` and what re-ranking subsets needs, from one sort.

    Returns ``(vector, values, order, ties)``: ``values`` is the RDM triangle when it is needed
    later (Pearson, or an RDM with undefined entries), else None; ``order`` the sort order and
    ``ties`` the :func:`tied_runs` of the sorted values (Spearman with finite entries, else
    None; ``ties`` only when some values repeat).
    The vector is bitwise :func:`rdm_vector`'s.
    """
    return _rdm_vector(X, rdm, corr, keep_order=True)


def _rdm_vector(
    X: Any, rdm: Any, corr: str, *, keep_order: bool
) -> tuple[RdmVector, npt.NDArray[np.float64] | None, np.ndarray | None, Any]:
    if corr not in CORRS:
        raise ConfigError(f"rsa: unknown corr {corr!r}. Choose one of {', '.join(CORRS)}.")
    X = as_matrix(X, "X")
    n = X.shape[0]
    if n < 3:
        raise ConfigError(f"rsa: needs at least 3 samples (got n={n}).")
    v = rdm_upper(X, rdm=rdm)
    kept = v if keep_order else None
    if not np.isfinite(v).all():
        return RdmVector(None, 0.0, 0.0, n, corr), kept, None, None
    if corr == "pearson":
        centred = v - v.mean() if keep_order else np.subtract(v, v.mean(), out=v)
        norm = float(np.linalg.norm(centred))
        return RdmVector(centred if norm > 0 else None, 0.0, norm, n, corr), kept, None, None
    ranks, ties, order, tied = _doubled_ranks(
        v, rdm_vector_dtype(corr, n), consume=True, keep_order=keep_order
    )
    del v, kept
    return _rank_vector(ranks, ties, n, corr), None, order, tied


def _rank_vector(ranks: np.ndarray, ties: int, n: int, corr: str) -> RdmVector:
    """Return the :class:`RdmVector` of doubled ranks with the given tie sum."""
    length = ranks.size
    # sum over entries of (2r - (L + 1))^2 = (L^3 - L - sum_groups (t^3 - t)) / 3, exactly
    sq = (length**3 - length - ties) // 3
    norm = math.sqrt(sq)
    return RdmVector(ranks if sq > 0 else None, float(length + 1), norm, n, corr)
