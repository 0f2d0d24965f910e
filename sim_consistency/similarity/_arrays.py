"""Input checks and helpers shared by the similarity measures (private)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from sim_consistency.errors import ConfigError

#: Rows per chunk when streaming an (n, d) array through float64 accumulators.
DEFAULT_CHUNK_ROWS = 2048


class DegenerateRepresentationWarning(UserWarning):
    """A representation is constant (zero variance): the measure is undefined and NaN."""


class BandwidthTooSmallWarning(UserWarning):
    """An RBF kernel underflows: every off-diagonal entry is 0 in float64, the result is NaN."""


def as_matrix(X: Any, name: str, *, lazy: bool = False) -> Any:
    """Return ``X`` (numpy array or torch tensor) as a 2-D numpy array, without copying.

    With ``lazy`` an ``h5py.Dataset`` (a block of the feature cache) is returned as it is, so
    that row-chunked code reads it chunk by chunk instead of loading it whole.
    """
    if lazy and isinstance(X, h5py.Dataset):
        if X.ndim != 2 or not np.issubdtype(X.dtype, np.number):
            raise ConfigError(f"{name} must be a 2-D numeric dataset (got {X.shape}, {X.dtype}).")
        return X
    if hasattr(X, "detach"):  # torch.Tensor
        X = X.detach().cpu().numpy()
    X = np.asarray(X)
    if X.ndim != 2:
        raise ConfigError(f"{name} must be a 2-D (n, d) array (got shape {X.shape}).")
    if not np.issubdtype(X.dtype, np.floating) and not np.issubdtype(X.dtype, np.integer):
        raise ConfigError(f"{name} must hold numbers (got dtype {X.dtype}).")
    return X


def check_pair(X: Any, Y: Any, where: str, *, lazy: bool = False) -> tuple[Any, Any]:
    """Return ``X, Y`` as matrices with the same number of rows (else raise, naming both)."""
    X, Y = as_matrix(X, "X", lazy=lazy), as_matrix(Y, "Y", lazy=lazy)
    if X.shape[0] != Y.shape[0]:
        raise ConfigError(
            f"{where}: X has {X.shape[0]} rows but Y has {Y.shape[0]}; features of different "
            "subsets cannot be compared."
        )
    return X, Y


def row_chunks(n: int, chunk_rows: int) -> Iterator[slice]:
    """Yield consecutive row slices of at most ``chunk_rows`` rows covering ``range(n)``."""
    if chunk_rows <= 0:
        raise ConfigError(f"chunk_rows must be a positive integer (got {chunk_rows}).")
    for start in range(0, n, chunk_rows):
        yield slice(start, min(n, start + chunk_rows))


def random_groups(n: int, n_groups: int, seed: int) -> npt.NDArray[np.int64]:
    """Return ``default_rng(seed).permutation(n) % n_groups``: a random group label per row.

    Groups of ``n // K`` or ``n // K + 1`` rows, independent of the row order. The one formula
    behind the jackknife's row groups and linear CKA's accumulation order.
    """
    return (np.random.default_rng(seed).permutation(n) % n_groups).astype(np.int64)


def group_bounds(labels: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Return where each group ``0 .. max(labels)`` starts and ends once rows are sorted by
    group (a stable argsort of ``labels``), (K + 1,)."""
    sizes = np.bincount(labels, minlength=int(labels.max(initial=-1)) + 1)
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def group_rows(labels: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], ...]:
    """Return the (increasing) row indices of each group ``0 .. max(labels)``."""
    order = np.argsort(labels, kind="stable")
    return tuple(np.split(order, group_bounds(labels)[1:-1]))


def column_mean(X: np.ndarray, chunk_rows: int) -> npt.NDArray[np.float64]:
    """Return the column means of ``X`` accumulated in float64 over row chunks."""
    total = np.zeros(X.shape[1], dtype=np.float64)
    for rows in row_chunks(X.shape[0], chunk_rows):
        total += X[rows].sum(axis=0, dtype=np.float64)
    return total / max(X.shape[0], 1)


def l2_normalize(X: Any, *, eps: float = 1e-12) -> npt.NDArray[np.float64]:
    """Return the rows of ``X`` scaled to unit Euclidean norm, in float64.

    Rep2Rep normalises features before every measure; zero rows stay zero (``eps`` guard).

    Args:
        X: features, (n, d), one row per sample.
        eps: rows with a norm below this are left as they are.
    """
    X = as_matrix(X, "X").astype(np.float64)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, eps)


def warn_bandwidth_too_small(what: str, sigma: float, min_sq_distance: float) -> float:
    """Warn that an RBF kernel underflows to the identity and return NaN."""
    warnings.warn(
        f"{what}: bandwidth too small for these features: sigma={sigma:.6g} against a smallest "
        f"squared distance of {min_sq_distance:.6g} between two samples, so every off-diagonal "
        "kernel entry underflows to 0 in float64 and the unbiased estimator is undefined; "
        "reported as NaN. Use a larger sigma (or sigma_median) or L2-normalised features.",
        BandwidthTooSmallWarning,
        stacklevel=3,
    )
    return float("nan")


def warn_degenerate(what: str) -> float:
    """Warn that a representation is constant and return NaN (never a silent number)."""
    warnings.warn(
        f"{what}: a representation is constant (zero variance); the similarity is undefined "
        "and reported as NaN.",
        DegenerateRepresentationWarning,
        stacklevel=3,
    )
    return float("nan")
