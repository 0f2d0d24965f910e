"""Feature purity: how cleanly classes separate, and how orthogonal neurons are.

Follows the "feature purity" study of CLIP projections (see shared/reference): a representation
whose neurons are nearly orthogonal carries less redundant, more class-pure information.

* :func:`silhouette` — silhouette score of a block's features w.r.t. the labels
  (scikit-learn's estimator; cosine distance by default, as features are compared by angle
  everywhere else in this package).
* :func:`abs_cosine_stats` — mean / max / median / std of the absolute cosine similarity between
  all distinct pairs of vectors: rows of a projection layer's weight matrix (neuron purity) or
  columns of a feature matrix (feature-dimension purity).
* :func:`orthogonality_scores` — per vector, its mean absolute cosine to all others (lower = more
  orthogonal = purer).
* :func:`retention_sweep` — keep the k most orthogonal (high-purity) vs the k least orthogonal
  dimensions and evaluate each kept subset (linear probe accuracy, silhouette) — the "high-purity
  neurons outperform" comparison. Kept columns stay in their original order, so at k = d both
  selections are exactly the full feature matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from sim_consistency.errors import ConfigError, DataError

__all__ = [
    "abs_cosine_stats",
    "orthogonality_scores",
    "retention_sweep",
    "select_dimensions",
    "silhouette",
]


def _unit_rows(
    vectors: npt.ArrayLike, what: str, *, skip_zero: bool = False
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Return the unit-normalised non-zero rows and the mask of rows kept."""
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] < 2:
        raise ConfigError(f"{what}: needs a 2-D array with at least 2 vectors (got {v.shape}).")
    if not np.all(np.isfinite(v)):
        raise DataError(f"{what}: the vectors contain NaN or inf.")
    norms = np.linalg.norm(v, axis=1)
    kept = norms > 0
    if not kept.all() and not skip_zero:
        raise DataError(
            f"{what}: vector(s) {np.flatnonzero(~kept)[:5].tolist()} are all zeros; "
            "their cosine is undefined (pass skip_zero=True to leave dead units out)."
        )
    if kept.sum() < 2:
        raise DataError(f"{what}: fewer than 2 non-zero vectors (got {int(kept.sum())}).")
    return v[kept] / norms[kept, None], kept


def _abs_cosine_matrix(
    vectors: npt.ArrayLike, what: str, *, skip_zero: bool = False
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    unit, kept = _unit_rows(vectors, what, skip_zero=skip_zero)
    return np.abs(unit @ unit.T), kept


def abs_cosine_stats(vectors: npt.ArrayLike, *, skip_zero: bool = False) -> dict[str, float]:
    """Return mean/max/median/std of |cos| over all distinct pairs of rows of ``vectors``.

    Args:
        vectors: ``(m, p)``, one vector per row (e.g. a projection weight ``(out, in)``: one row
            per neuron; or ``features.T``: one row per feature dimension).
        skip_zero: leave all-zero rows (dead ReLU units) out of the statistics instead of
            raising; their number is reported as ``n_zero``.

    Raises:
        ConfigError: fewer than two rows. DataError: NaN/inf, or an all-zero row without
            ``skip_zero``.
    """
    cos, kept = _abs_cosine_matrix(vectors, "abs_cosine_stats", skip_zero=skip_zero)
    upper = cos[np.triu_indices(cos.shape[0], k=1)]
    return {
        "mean_abs_cos": float(upper.mean()),
        "max_abs_cos": float(upper.max()),
        "median_abs_cos": float(np.median(upper)),
        "std_abs_cos": float(upper.std()),
        "n_vectors": int(kept.size),
        "n_zero": int((~kept).sum()),
    }


def orthogonality_scores(
    vectors: npt.ArrayLike, *, skip_zero: bool = False
) -> npt.NDArray[np.float64]:
    """Return, per row, the mean |cos| to every other row (lower = more orthogonal = purer).

    With ``skip_zero``, all-zero rows (dead units, which carry nothing) score ``+inf``: they are
    never kept as high-purity dimensions and are the first kept as low-purity ones.
    """
    cos, kept = _abs_cosine_matrix(vectors, "orthogonality_scores", skip_zero=skip_zero)
    m = cos.shape[0]
    scores = np.full(kept.size, np.inf)
    scores[kept] = (cos.sum(axis=1) - np.diag(cos)) / (m - 1)
    return scores


def silhouette(
    features: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    metric: str = "cosine",
    max_samples: int | None = 5000,
    seed: int = 0,
) -> float:
    """Return the silhouette score of ``features`` grouped by ``labels`` (in [−1, 1]).

    Args:
        features: ``(n, d)``.
        labels: ``(n,)`` class labels; at least 2 classes and fewer classes than samples.
        metric: any scikit-learn pairwise metric (default cosine).
        max_samples: evaluate on a seeded random subset of this many rows (the estimator is
            O(n²)); ``None`` uses all rows.
        seed: subset seed.
    """
    from sklearn.metrics import silhouette_score

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    n_classes = len(np.unique(y))
    if x.ndim != 2 or len(x) != len(y):
        raise ConfigError(f"silhouette: features {x.shape} and labels {y.shape} do not match.")
    if not 2 <= n_classes < len(y):
        raise ConfigError(
            f"silhouette: needs 2 ≤ classes < samples (got {n_classes} classes, {len(y)} samples)."
        )
    sample_size = None if max_samples is None or max_samples >= len(y) else max_samples
    return float(silhouette_score(x, y, metric=metric, sample_size=sample_size, random_state=seed))


def select_dimensions(scores: npt.ArrayLike, k: int, *, purity: str) -> npt.NDArray[np.int64]:
    """Return the sorted indices of the k most (``purity="high"``) or least (``"low"``) pure dims.

    Ties in the score are broken by index, so the selection is deterministic.
    """
    s = np.asarray(scores, dtype=np.float64)
    if np.isnan(s).any():
        raise ConfigError("select_dimensions: scores contain NaN.")
    if not 1 <= k <= s.size:
        raise ConfigError(f"select_dimensions: k must be in [1, {s.size}] (got {k}).")
    if purity not in ("high", "low"):
        raise ConfigError(f"select_dimensions: purity must be 'high' or 'low' (got {purity!r}).")
    order = np.lexsort((np.arange(s.size), s if purity == "high" else -s))
    return np.sort(order[:k])


def retention_sweep(
    X_train: npt.ArrayLike,
    X_test: npt.ArrayLike,
    scores: npt.ArrayLike,
    ks: Sequence[int],
    evaluate: Callable[[np.ndarray, np.ndarray], dict[str, float]],
) -> pd.DataFrame:
    """Evaluate feature subsets that keep the k purest vs the k least pure dimensions.

    Args:
        X_train, X_test: ``(n, d)`` features of the train and test splits.
        scores: ``(d,)`` orthogonality score per dimension (lower = purer), e.g.
            :func:`orthogonality_scores` of the projection layer's weight rows or of
            ``X_train.T``.
        ks: numbers of dimensions to keep (each in [1, d]).
        evaluate: ``(X_train_kept, X_test_kept) -> {metric: value}`` (e.g. a linear probe's
            top-1 and a silhouette score).

    Returns:
        Tidy rows ``k, purity ("high"|"low"), <metric columns>``.
    """
    xtr, xte = np.asarray(X_train), np.asarray(X_test)
    s = np.asarray(scores, dtype=np.float64)
    if xtr.shape[1] != s.size or xte.shape[1] != s.size:
        raise ConfigError(
            f"retention_sweep: {s.size} scores for features of width {xtr.shape[1]} "
            f"(train) / {xte.shape[1]} (test)."
        )
    rows = []
    for k in ks:
        for purity in ("high", "low"):
            keep = select_dimensions(s, int(k), purity=purity)
            rows.append({"k": int(k), "purity": purity, **evaluate(xtr[:, keep], xte[:, keep])})
    return pd.DataFrame(rows)
