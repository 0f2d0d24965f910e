"""Representational similarity analysis (RSA; Kriegeskorte et al., 2008).

Each representation is summarised by its representational dissimilarity matrix (RDM) over the
samples — ``1 - Pearson correlation`` between the rows (``rdm="correlation"``, Rep2Rep's
default) or ``1 - cosine similarity`` (``rdm="cosine"``) — and two RDMs are compared by the
Spearman (average ranks for ties, as ``scipy.stats.spearmanr``, after rounding the
dissimilarities to 12 decimals so that exact ties survive rounding noise) or Pearson correlation of their
strict upper triangles. The RDM is built in row slabs in float64; its upper triangle,
n(n-1)/2 values, is the per-representation statistic (:class:`RsaStats`), standardised once so
that every pair costs one dot product.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata

from sim_consistency.errors import ConfigError
from sim_consistency.similarity._arrays import as_matrix, check_pair, row_chunks, warn_degenerate

__all__ = ["rsa", "rdm_upper", "RsaStats", "rsa_stats", "rsa_from_stats"]

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
        S = Z[rows] @ Z.T
        for i_local, i in enumerate(range(rows.start, rows.stop)):
            tail = S[i_local, i + 1 :]
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
