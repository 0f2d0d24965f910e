"""Benchmark: RBF-CKA and Spearman-RSA model×model matrices at study scale (CPU).

One process, the same random features (M models, n rows, d = 768, L2-normalised rows, as the
stage runs them), three contenders side by side:

  (a) **streamed** (ours, now): per-model statistics once, then every pair's cross term in one
      streamed Gram product (:mod:`sim_consistency.similarity.streamed`), timed in full;
  (b) **per-pair** (ours before this change, ``similarity_matrix(..., streamed=False)``):
      statistics once, then one slab pass per pair that re-forms both kernels (O(n^2 d) per
      pair). Timed on ``--sample_pairs`` pairs and projected to the M(M-1)/2 pairs, plus the
      statistics (measured in (a));
  (c) **thingsvision-style** (what Rep2Rep runs, re-implemented: thingsvision is not installed
      here): RBF CKA as ``CKANumPy.kernel_CKA`` — per pair, six n×n RBF kernels
      (``exp(-(diag - G + (diag - G)^T) / (2σ^2))``) centred (U-centring when unbiased) and
      three Frobenius products; RSA as ``compute_rdm(…, "correlation")`` per model of the pair
      and ``correlate_rdms(…, "spearman")`` = ``scipy.stats.spearmanr`` of the upper triangles.
      Timed on one pair and projected.

Spearman RSA: (a) is :func:`~sim_consistency.similarity.streamed.rsa_matrix` (exact doubled
ranks, int32, kept in half the budget or spilled to ``--scratch``, tiled Pearson-of-ranks GEMM);
(b) is ``rsa_stats`` (``scipy.stats.rankdata``, float64 standardised triangle per model, held
for all M models) + one dot product per pair; (c) as above. The per-pair path's RDM shares
(a)'s upper-block GEMM (``rdm_upper``), so (b) is, if anything, faster than before this change.

Agreement: (a) vs (b) on the sampled pairs (max |Δ|) and (a) vs (c) on the pair of (c).
Peak memory: ``ru_maxrss`` of the process after each case (monotone, so a case's figure bounds
all before it), the streamed working set the budget allows, and for RSA the tracemalloc peak
of (a)'s whole call and of (b)'s statistics of the sampled models.

    nice uv run --frozen python benchmarks/similarity_matrix_scale.py           # issue sizes
    nice uv run --frozen python benchmarks/similarity_matrix_scale.py --quick   # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim_consistency.config.similarity import MetricSpec  # noqa: E402
from sim_consistency.similarity import l2_normalize, similarity_matrix  # noqa: E402
from sim_consistency.similarity.cka import rbf_cka_from_stats, rbf_stats  # noqa: E402
from sim_consistency.similarity.rsa import rsa_from_stats, rsa_stats  # noqa: E402
from sim_consistency.similarity.streamed import (  # noqa: E402
    DEFAULT_MEMORY_BUDGET,
    rsa_matrix,
)

SIGMA = 0.4

# -- (c) thingsvision-style baselines --------------------------------------------------------


def _tv_rbf(X: np.ndarray, sigma: float) -> np.ndarray:
    G = X @ X.T
    diag = np.diag(G) - G
    K = diag + diag.T
    K *= -0.5 / (sigma * sigma)
    return np.exp(K)


def _tv_centre(K: np.ndarray, unbiased: bool) -> np.ndarray:
    n = K.shape[0]
    if unbiased:
        np.fill_diagonal(K, 0.0)
        means = K.sum(axis=0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        K -= means[:, None]
        K -= means[None, :]
        np.fill_diagonal(K, 0.0)
    else:
        means = K.mean(axis=0)
        means -= means.mean() / 2
        K -= means[:, None]
        K -= means[None, :]
    return K


def _tv_hsic(X: np.ndarray, Y: np.ndarray, unbiased: bool) -> float:
    return float(
        np.sum(_tv_centre(_tv_rbf(X, SIGMA), unbiased) * _tv_centre(_tv_rbf(Y, SIGMA), unbiased))
    )


def tv_rbf_cka(X: np.ndarray, Y: np.ndarray, unbiased: bool) -> float:
    """thingsvision ``kernel_CKA``: three HSICs, two kernels each (six per pair)."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    return _tv_hsic(X, Y, unbiased) / np.sqrt(_tv_hsic(X, X, unbiased) * _tv_hsic(Y, Y, unbiased))


def tv_rsa(X: np.ndarray, Y: np.ndarray) -> float:
    """thingsvision ``compute_rdm(correlation)`` per model, ``spearmanr`` of upper triangles."""
    iu = np.triu_indices(X.shape[0], k=1)
    rx = (1.0 - np.corrcoef(X))[iu]
    ry = (1.0 - np.corrcoef(Y))[iu]
    return float(spearmanr(rx, ry)[0])


# -- features --------------------------------------------------------------------------------


def models(m: int, n: int, d: int, seed: int = 0) -> list[np.ndarray]:
    """M float32 representations sharing a latent structure (so the similarities are not ~0)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, 64), dtype=np.float32)
    out = []
    for _ in range(m):
        W = rng.standard_normal((64, d), dtype=np.float32) / 8.0
        X = np.tanh(base @ W) + 0.5 * rng.standard_normal((n, d), dtype=np.float32)
        out.append(l2_normalize(X))
    return out


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def bench_rbf(feats: list[np.ndarray], sample_pairs: int, tv: bool, budget: int) -> dict:
    m, n = len(feats), feats[0].shape[0]
    n_pairs = m * (m - 1) // 2
    spec = MetricSpec("cka", sim_kernel="rbf", unbiased=True, sigma=SIGMA)
    t0 = time.perf_counter()
    new = similarity_matrix(feats, spec, normalize=False, memory_budget=budget)
    t_new = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    chosen = [pairs[k] for k in rng.choice(len(pairs), sample_pairs, replace=False)]
    used = sorted({i for p in chosen for i in p})  # old statistics: the sampled models only
    t0 = time.perf_counter()
    stats = {i: rbf_stats(feats[i], sigma=SIGMA) for i in used}
    t_stats = (time.perf_counter() - t0) / len(used) * m
    t0 = time.perf_counter()
    old = [rbf_cka_from_stats(stats[i], stats[j], unbiased=True) for i, j in chosen]
    t_pair = (time.perf_counter() - t0) / len(chosen)
    out = {
        "metric": "rbf_cka_unbiased_sigma0.4",
        "M": m,
        "n": n,
        "streamed_s": t_new,
        "per_pair_stats_s_projected": t_stats,
        "per_pair_s_per_pair": t_pair,
        "per_pair_projected_s": t_stats + n_pairs * t_pair,
        "max_abs_diff_vs_per_pair": max(
            abs(new[i, j] - v) for (i, j), v in zip(chosen, old, strict=True)
        ),
    }
    out["speedup_vs_per_pair"] = out["per_pair_projected_s"] / out["streamed_s"]
    if tv:
        i, j = chosen[0]
        t0 = time.perf_counter()
        ref = tv_rbf_cka(feats[i], feats[j], unbiased=True)
        out["thingsvision_s_per_pair"] = time.perf_counter() - t0
        out["thingsvision_projected_s"] = n_pairs * out["thingsvision_s_per_pair"]
        out["max_abs_diff_vs_thingsvision"] = abs(ref - new[i, j])
        out["speedup_vs_thingsvision"] = out["thingsvision_projected_s"] / out["streamed_s"]
    out["peak_rss_gib_so_far"] = _rss_gib()
    return out


def bench_rsa(
    feats: list[np.ndarray], sample_pairs: int, tv: bool, budget: int, scratch: Path
) -> dict:
    """Spearman RSA (correlation RDM): new streamed path vs per-pair vs thingsvision-style."""
    m, n = len(feats), feats[0].shape[0]
    n_pairs = m * (m - 1) // 2
    length = n * (n - 1) // 2
    spec = MetricSpec("rsa", rsa_method="correlation", corr_method="spearman")
    spilled: list[Path] = []
    tracemalloc.start()
    t0 = time.perf_counter()
    new = rsa_matrix(feats, memory_budget=budget, scratch_dir=scratch, on_spill=spilled.append)
    t_new = time.perf_counter() - t0
    new_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    same_api = similarity_matrix(feats[:3], spec, normalize=False)  # the stage's entry point
    assert np.allclose(same_api, new[:3, :3], atol=1e-12, equal_nan=True)
    rng = np.random.default_rng(0)
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    chosen = [pairs[k] for k in rng.choice(len(pairs), sample_pairs, replace=False)]
    used = sorted({i for p in chosen for i in p})
    tracemalloc.start()
    t0 = time.perf_counter()
    stats = {i: rsa_stats(feats[i], rdm="correlation", corr="spearman") for i in used}
    t_stats = (time.perf_counter() - t0) / len(used) * m
    old_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    t0 = time.perf_counter()
    old = [rsa_from_stats(stats[i], stats[j]) for i, j in chosen]
    t_pair = (time.perf_counter() - t0) / len(chosen)
    out = {
        "metric": "rsa_correlation_spearman",
        "M": m,
        "n": n,
        "streamed_s": t_new,
        "streamed_spilled": bool(spilled),
        "streamed_peak_traced_gib": new_peak / 2**30,
        "streamed_store_gib": m * length * 4 / 2**30,
        "per_pair_stats_s_projected": t_stats,
        "per_pair_s_per_pair": t_pair,
        "per_pair_projected_s": t_stats + n_pairs * t_pair,
        "per_pair_held_gib_projected": m * length * 8 / 2**30,
        "per_pair_peak_traced_gib_for_sampled": old_peak / 2**30,
        "max_abs_diff_vs_per_pair": max(
            abs(new[i, j] - v) for (i, j), v in zip(chosen, old, strict=True)
        ),
    }
    del stats
    out["speedup_vs_per_pair"] = out["per_pair_projected_s"] / out["streamed_s"]
    if tv:
        i, j = chosen[0]
        t0 = time.perf_counter()
        ref = tv_rsa(feats[i], feats[j])
        out["thingsvision_s_per_pair"] = time.perf_counter() - t0
        out["thingsvision_projected_s"] = n_pairs * out["thingsvision_s_per_pair"]
        out["max_abs_diff_vs_thingsvision"] = abs(ref - new[i, j])
        out["speedup_vs_thingsvision"] = out["thingsvision_projected_s"] / out["streamed_s"]
    out["peak_rss_gib_so_far"] = _rss_gib()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="n = 1,000 / 2,000, M = 6")
    p.add_argument("--models", type=int, default=20)
    p.add_argument("--sizes", type=int, nargs="+", default=[4000, 10000])
    p.add_argument("--rsa_models", type=int, default=None, help="M for RSA (default --models)")
    p.add_argument("--rsa_sizes", type=int, nargs="+", default=None, help="n for RSA")
    p.add_argument("--sample_pairs", type=int, default=2)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--no_thingsvision", action="store_true")
    p.add_argument("--metrics", nargs="+", default=["rbf", "rsa"])
    p.add_argument("--memory_budget", type=int, default=DEFAULT_MEMORY_BUDGET)
    p.add_argument("--scratch", type=Path, default=REPO / ".bench_scratch", help="RSA spill folder")
    a = p.parse_args()
    sizes, m = ([1000, 2000], 6) if a.quick else (a.sizes, a.models)
    results = []
    for n in sizes:
        feats = models(m, n, a.dim)
        if "rbf" in a.metrics:
            results.append(bench_rbf(feats, a.sample_pairs, not a.no_thingsvision, a.memory_budget))
            print(json.dumps(results[-1]), flush=True)
        if "rsa" in a.metrics and (a.rsa_sizes is None or n in a.rsa_sizes):
            rsa_feats = feats[: a.rsa_models] if a.rsa_models else feats
            results.append(
                bench_rsa(
                    rsa_feats, a.sample_pairs, not a.no_thingsvision, a.memory_budget, a.scratch
                )
            )
            print(json.dumps(results[-1]), flush=True)
    print(
        json.dumps(
            {
                "memory_budget_bytes": a.memory_budget,
                "cpu_count": os.cpu_count(),
                "load_average": os.getloadavg(),
            }
        )
    )


if __name__ == "__main__":
    main()
