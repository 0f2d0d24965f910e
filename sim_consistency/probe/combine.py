"""Features of several models combined for one probe: ``concat`` and ``concat_pca`` (Rep2Rep).

Rep2Rep's combined-model probes (``--mode combined_models --feature_combiner …``,
``clip_benchmark/metrics/feature_combiner.py``) concatenate the representations of a model
set — each already L2-normalised at extraction — and probe the result:

* ``concat``: ``[x₁/‖x₁‖, …, x_k/‖x_k‖]`` (d = Σ dᵢ). Every model's rows are L2-normalised
  here, because our caches store raw features; the probe then L2-normalises the
  concatenated row as for a single model.
* ``concat_pca``: the concatenation standardised per column (mean and standard deviation of
  the **train** rows, ``StandardScaler``'s population std, a zero std read as 1), projected on
  the principal axes of the standardised train rows, keeping the fewest leading components
  whose cumulative explained-variance ratio exceeds ``pca_variance`` (Rep2Rep: 0.99;
  ``1.0`` keeps every component of non-zero variance, where Rep2Rep's ``argmax`` rule would
  keep one). The test rows use the train statistics and axes only (no leakage). The number of
  components kept is reported (``n_components``) with the concatenated width (``d_concat``).

All arithmetic is float64. Concatenating a model with itself leaves the ``fast`` probe's
problem unchanged (the duplicated weights split evenly, their L2 penalty equal to the single
model's), so its accuracy equals the single model's within the solver's tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sim_consistency.errors import ConfigError, DataError

__all__ = ["COMBINERS", "DEFAULT_PCA_VARIANCE", "Combined", "combine_features"]

#: Feature combiners that fit a probe on combined features (``ensemble`` needs no features).
COMBINERS = ("concat", "concat_pca")

#: Rep2Rep's explained-variance fraction for ``concat_pca``.
DEFAULT_PCA_VARIANCE = 0.99


@dataclass(frozen=True)
class Combined:
    """Combined train and test features and how they were made."""

    train: npt.NDArray[np.float64]  #: (n, d_out)
    test: npt.NDArray[np.float64]  #: (m, d_out)
    method: str
    dims: tuple[int, ...]  #: each model's width
    d_concat: int  #: Σ dims
    n_components: int | None  #: concat_pca: components kept
    explained_variance: float | None  #: concat_pca: their cumulative explained-variance ratio


def _unit_rows(X: npt.ArrayLike) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _principal_axes(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(variances, axes)`` of centred rows ``Z`` (n, d), descending; axes are columns."""
    n, d = Z.shape
    if d <= n:
        values, vectors = np.linalg.eigh(Z.T @ Z / n)
        order = np.argsort(values)[::-1]
        return np.clip(values[order], 0.0, None), vectors[:, order]
    _, s, vt = np.linalg.svd(Z, full_matrices=False)
    return s**2 / n, vt.T


def combine_features(
    train: Sequence[npt.ArrayLike],
    test: Sequence[npt.ArrayLike],
    method: str,
    *,
    pca_variance: float = DEFAULT_PCA_VARIANCE,
) -> Combined:
    """Return the models' features combined by ``method`` (see the module docstring).

    Args:
        train: each model's train features (n, dᵢ), rows aligned across models.
        test: each model's test features (m, dᵢ), in the same model order.
        method: ``"concat"`` or ``"concat_pca"``.
        pca_variance: ``concat_pca``'s explained-variance fraction, in (0, 1].

    Raises:
        ConfigError: unknown method or ``pca_variance`` out of range.
        DataError: no model, or row counts or widths that disagree.
    """
    if method not in COMBINERS:
        raise ConfigError(f"unknown feature combiner {method!r}; choose {', '.join(COMBINERS)}.")
    if not 0.0 < pca_variance <= 1.0:
        raise ConfigError(f"--pca_variance must be in (0, 1] (got {pca_variance}).")
    if not train or len(train) != len(test):
        raise DataError(f"combine_features: {len(train)} train and {len(test)} test blocks.")
    tr = [_unit_rows(X) for X in train]
    te = [_unit_rows(X) for X in test]
    for i, (a, b) in enumerate(zip(tr, te, strict=True)):
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
            raise DataError(f"combine_features: model {i}: train {a.shape} vs test {b.shape}.")
        if a.shape[0] != tr[0].shape[0] or b.shape[0] != te[0].shape[0]:
            raise DataError(f"combine_features: model {i} has a different number of rows.")
    dims = tuple(a.shape[1] for a in tr)
    X_train, X_test = np.concatenate(tr, axis=1), np.concatenate(te, axis=1)
    if method == "concat":
        return Combined(X_train, X_test, method, dims, sum(dims), None, None)
    mean = X_train.mean(axis=0)
    scale = X_train.std(axis=0)
    scale[scale == 0.0] = 1.0
    Z_train, Z_test = (X_train - mean) / scale, (X_test - mean) / scale
    variances, axes = _principal_axes(Z_train)
    total = variances.sum()
    if total <= 0.0:
        raise DataError("concat_pca: the train features have no variance; nothing to project.")
    cumulative = np.cumsum(variances) / total
    rank = int(np.sum(variances > variances[0] * 1e-12))
    k = min(int(np.searchsorted(cumulative, pca_variance, side="right")) + 1, rank)
    W = axes[:, :k]
    return Combined(Z_train @ W, Z_test @ W, method, dims, sum(dims), k, float(cumulative[k - 1]))
