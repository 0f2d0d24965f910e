"""Model×model similarity matrices: per-representation statistics once, then every pair.

:data:`SIMILARITY_METRICS` maps each ``sim_method`` of the similarity config to a pair of
functions: ``prepare(X, spec)`` builds the statistics of one representation (means, row norms,
self-HSIC, Gram or kernel bandwidth, RDM ranks, k-NN table) and ``compare(a, b, spec)`` scores a
pair from two of them. :func:`similarity_matrix` prepares each model once and compares the
M(M-1)/2 pairs, so nothing per-model is recomputed per pair.

For RBF CKA and RSA the pairs' cross terms are computed together as one streamed Gram matrix
(:mod:`~sim_consistency.similarity.streamed`): each model's kernel rows are formed once per
slab instead of once per pair, the M×M products are GEMMs, and the working memory stays within
``memory_budget`` whatever M is — for RSA the models' ranked RDM triangles too, spilled to a
scratch file in ``scratch_dir`` when they do not fit (``streamed=False`` keeps the
pair-by-pair path).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from sim_consistency.config.similarity import MetricSpec
from sim_consistency.errors import ConfigError
from sim_consistency.progress import progress_bar
from sim_consistency.similarity._arrays import as_matrix, group_bounds, l2_normalize
from sim_consistency.similarity.cka import (
    accumulation_groups,
    choose_space,
    linear_cka_from_stats,
    linear_stats,
    rbf_cka_from_stats,
    rbf_stats,
)
from sim_consistency.similarity.knn import knn_table, mutual_knn_from_tables
from sim_consistency.similarity.rsa import rsa_from_stats, rsa_stats
from sim_consistency.similarity.streamed import (
    DEFAULT_MEMORY_BUDGET,
    RbfBlocks,
    rbf_cross_matrix,
    resolve_device,
    rsa_matrix,
)

__all__ = [
    "SIMILARITY_METRICS",
    "RbfPass",
    "similarity_matrix",
    "rbf_streamed_matrix",
    "describe_estimator",
]

log = logging.getLogger("sim_consistency.similarity")


def _prepare_cka(X: np.ndarray, spec: MetricSpec, space: Literal["feature", "gram"]) -> Any:
    if spec.sim_kernel == "linear":
        return linear_stats(X, space=space)
    return rbf_stats(X, sigma=spec.sigma, sigma_median=spec.sigma_median)


def _compare_cka(a: Any, b: Any, spec: MetricSpec) -> float:
    compare = linear_cka_from_stats if spec.sim_kernel == "linear" else rbf_cka_from_stats
    return compare(a, b, unbiased=bool(spec.unbiased))


def _prepare_rsa(X: np.ndarray, spec: MetricSpec, space: str) -> Any:
    assert spec.rsa_method is not None and spec.corr_method is not None  # set for "rsa" specs
    return rsa_stats(X, rdm=spec.rsa_method, corr=spec.corr_method)


def _prepare_mknn(X: np.ndarray, spec: MetricSpec, space: str) -> Any:
    assert spec.k is not None  # set for "mknn" specs
    return knn_table(X, spec.k)


#: ``sim_method`` -> (prepare one representation, compare two prepared representations).
SIMILARITY_METRICS: dict[str, tuple[Callable[..., Any], Callable[..., float]]] = {
    "cka": (_prepare_cka, _compare_cka),
    "rsa": (_prepare_rsa, lambda a, b, spec: rsa_from_stats(a, b)),
    "mknn": (_prepare_mknn, lambda a, b, spec: mutual_knn_from_tables(a, b)),
}


def describe_estimator(spec: MetricSpec) -> str:
    """Return a one-line description of the estimator behind ``spec`` (for metadata files)."""
    if spec.sim_method == "cka":
        hsic = (
            "unbiased HSIC (Song et al. 2012, eq. 5)"
            if spec.unbiased
            else "biased HSIC tr(KHLH) (Gretton et al. 2005; Kornblith et al. 2019)"
        )
        if spec.sim_kernel == "linear":
            kernel = "linear kernel"
        elif spec.sigma is not None:
            kernel = f"RBF kernel exp(-d^2/(2 sigma^2)), sigma={spec.sigma:g} (absolute)"
        else:
            kernel = (
                f"RBF kernel, sigma^2 = {spec.sigma_median:g}^2 * median of all n^2 squared "
                "distances"
            )
        return f"CKA with {kernel}, {hsic}, float64 accumulation"
    if spec.sim_method == "rsa":
        rdm = "1 - Pearson r between samples" if spec.rsa_method == "correlation" else "1 - cosine"
        return f"RSA: RDM = {rdm}; {spec.corr_method} correlation of the strict upper triangles"
    return f"mutual k-NN (Huh et al. 2024), k={spec.k}, cosine, self excluded, ties by index"


def similarity_matrix(
    features: Sequence[Any],
    spec: MetricSpec,
    *,
    normalize: bool = True,
    space: str = "auto",
    progress: bool = False,
    streamed: bool = True,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    device: str = "cpu",
    scratch_dir: str | os.PathLike | None = None,
) -> npt.NDArray[np.float64]:
    """Return the symmetric (M, M) similarity matrix of M representations of the same rows.

    Args:
        features: M feature arrays, each (n, d_m), rows aligned.
        spec: the metric.
        normalize: L2-normalise each row first (Rep2Rep's default).
        space: linear CKA only: ``"feature"``, ``"gram"`` or ``"auto"`` (Gram space when n is
            below the median width d).
        progress: report progress over the representations and the pairs.
        streamed: RBF CKA and RSA: compute all cross terms as one streamed Gram matrix.
        memory_budget: bytes for the streamed slabs (tiles the models when needed).
        device: ``"cpu"`` (numpy), ``"cuda"``, ``"auto"`` or ``"torch-cpu"`` (see
            :func:`~sim_consistency.similarity.streamed.resolve_device`).
        scratch_dir: streamed RSA: folder for the scratch file of ranked RDMs when they exceed
            half the budget (default: the system temp folder); removed afterwards.

    Returns:
        Float64 matrix; the diagonal is the self-similarity (1, or NaN for a degenerate
        representation).
    """
    if spec.sim_method not in SIMILARITY_METRICS:
        raise ConfigError(
            f"similarity_matrix: unknown sim_method {spec.sim_method!r}. "
            f"Choose one of {', '.join(sorted(SIMILARITY_METRICS))}."
        )
    prepare, compare = SIMILARITY_METRICS[spec.sim_method]
    mats = [as_matrix(X, f"features[{i}]") for i, X in enumerate(features)]
    if normalize:
        mats = [l2_normalize(X) for X in mats]
    if space == "auto":
        space = choose_space(mats[0].shape[0] if mats else 0, [X.shape[1] for X in mats])
    if streamed and spec.sim_method == "rsa":
        assert spec.rsa_method is not None and spec.corr_method is not None
        return rsa_matrix(
            mats,
            rdm=spec.rsa_method,
            corr=spec.corr_method,
            memory_budget=memory_budget,
            device=resolve_device(device),
            scratch_dir=scratch_dir,
            progress=progress,
        )
    if streamed and spec.sim_method == "cka" and spec.sim_kernel == "rbf":
        return rbf_streamed_matrix(
            mats, spec, memory_budget=memory_budget, device=device, progress=progress
        ).point
    stats = [
        prepare(X, spec, space) for X in progress_bar(mats, desc="prepare", disable=not progress)
    ]
    m = len(stats)
    out = np.empty((m, m), dtype=np.float64)
    pairs = [(i, j) for i in range(m) for j in range(i, m)]
    for i, j in progress_bar(pairs, desc="pairs", disable=not progress):
        out[i, j] = out[j, i] = compare(stats[i], stats[j], spec)
    return out


@dataclass(frozen=True)
class RbfPass:
    """The streamed RBF CKA matrix with what its pass leaves behind.

    Attributes:
        point: the (M, M) matrix.
        stats: each model's completed :class:`~sim_consistency.similarity.cka.RbfStats`, rows
            sorted by accumulation group.
        blocks: the pass's per-group block sums and row sums
            (:class:`~sim_consistency.similarity.streamed.RbfBlocks`).
    """

    point: npt.NDArray[np.float64]
    stats: list[Any]
    blocks: RbfBlocks


def rbf_streamed_matrix(
    mats: Sequence[np.ndarray],
    spec: MetricSpec,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    device: str = "cpu",
    progress: bool = False,
) -> RbfPass:
    """Return RBF CKA of M prepared (normalised) representations from one streamed pass.

    Rows are taken in the order of linear CKA's accumulation groups
    (:func:`~sim_consistency.similarity.cka.accumulation_groups`: K = 20, seed 0 — the default
    jackknife groups) and the pass sums per group (:func:`rbf_cross_matrix` with ``bounds``),
    so the confidence interval of :func:`~sim_consistency.uncertainty.similarity_matrix_ci`
    reads its block sums off this pass and its point is bitwise this matrix. RBF CKA does not
    depend on the row order; the order only fixes the summation order.
    """
    n = mats[0].shape[0] if mats else 0
    groups = accumulation_groups(n)
    order = np.argsort(groups, kind="stable")
    bounds = group_bounds(groups)
    stats = [
        rbf_stats(X[order], sigma=spec.sigma, sigma_median=spec.sigma_median, self_terms=False)
        for X in progress_bar(mats, desc="prepare", disable=not progress)
    ]
    m = len(stats)
    unbiased = bool(spec.unbiased)
    if m == 0:
        empty = np.zeros((0, 0, 1, 1))
        return RbfPass(np.empty((0, 0)), stats, RbfBlocks(empty, np.zeros((0, n, 1)), bounds))
    cross, blocks = rbf_cross_matrix(
        stats,
        memory_budget=memory_budget,
        device=resolve_device(device),
        complete=True,
        bounds=bounds,
        blocks=True,
    )
    out = np.empty((m, m), dtype=np.float64)
    pairs = [(i, j) for i in range(m) for j in range(i, m)]
    for i, j in progress_bar(pairs, desc="pairs", disable=not progress):
        out[i, j] = out[j, i] = rbf_cka_from_stats(
            stats[i], stats[j], unbiased=unbiased, cross=None if i == j else cross[i, j]
        )
    return RbfPass(out, stats, blocks)
