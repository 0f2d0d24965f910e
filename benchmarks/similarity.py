"""Benchmark: linear CKA grids and model×model matrices, ours vs a per-pair Gram baseline (CPU).

Same random features, one process, run side by side (interleaved, best of ``--repeats``):

  (a) baseline in the style of thingsvision's ``CKANumPy.compare`` (the CKA Rep2Rep uses): for
      every pair, rebuild the float32 n×n Gram matrices of HSIC(X, Y), HSIC(X, X) and
      HSIC(Y, Y) (six Gram products), check symmetry, centre them (Kornblith's O(n^2)
      centring; the U-statistic centring when unbiased) and take Frobenius products;
  (b) ours: :func:`~sim_consistency.similarity.block_stats` once per representation, then
      :func:`~sim_consistency.similarity.cka_grid_from_stats` — float64, feature space
      (``X^T Y`` over row chunks) when n > d, as the stages run it.

Cases (the issue's): a 13×13 block grid of two ViT-B-like models (d = 768) at n = 4,000 and
n = 10,000, and a 20×20 linear-unbiased model matrix at n = 10,000. On a small CPU the baseline
cannot run all 169 or 190 pairs in minutes, so both contenders are timed on the same
``--sample_pairs`` pairs; ours per pair is its cross term plus its statistics amortised over
the case's pairs, and the full-case times are per-pair × pairs (stated as projected). The
agreement of (a) and (b) and of (b) with a float64 textbook reference is measured on the same
pairs. Then the peak RSS of ours at n = 50,000 (a fresh subprocess: one pair, d = 768) against
the n×n float64 matrix it avoids.

    uv run python benchmarks/similarity.py            # the issue's sizes
    uv run python benchmarks/similarity.py --quick    # n = 1,000 / 2,000, seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim_consistency.similarity import (  # noqa: E402
    block_stats,
    linear_cka_from_stats,
    linear_stats,
)

# -- baseline: per-pair float32 Gram matrices (thingsvision CKANumPy.compare) ----------------


def _centre(K: np.ndarray, unbiased: bool) -> np.ndarray:
    if not np.allclose(K, K.T, rtol=1e-3, atol=1e-4):
        raise ValueError("Gram matrix is not symmetric")
    if unbiased:
        n = K.shape[0]
        np.fill_diagonal(K, 0.0)
        means = np.sum(K, axis=0, dtype=np.float64) / (n - 2)
        means -= np.sum(means) / (2 * (n - 1))
        K -= means[:, None].astype(K.dtype)
        K -= means[None, :].astype(K.dtype)
        np.fill_diagonal(K, 0.0)
    else:
        means = np.mean(K, axis=0, dtype=np.float64)
        means -= np.mean(means) / 2
        K -= means[:, None].astype(K.dtype)
        K -= means[None, :].astype(K.dtype)
    return K


def _hsic(X: np.ndarray, Y: np.ndarray, unbiased: bool) -> float:
    return float(np.sum(_centre(X @ X.T, unbiased) * _centre(Y @ Y.T, unbiased)))


def baseline_cka(X: np.ndarray, Y: np.ndarray, unbiased: bool) -> float:
    """CKA as thingsvision computes it: six float32 Gram matrices per pair."""
    X, Y = X.astype(np.float32, copy=False), Y.astype(np.float32, copy=False)
    return _hsic(X, Y, unbiased) / np.sqrt(_hsic(X, X, unbiased) * _hsic(Y, Y, unbiased))


def reference_cka(X: np.ndarray, Y: np.ndarray, unbiased: bool) -> float:
    """Float64 textbook CKA (same estimators as the baseline) — the ground truth."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    return _hsic(X, Y, unbiased) / np.sqrt(_hsic(X, X, unbiased) * _hsic(Y, Y, unbiased))


# -- features --------------------------------------------------------------------------------


def vit_like_blocks(n: int, d: int, n_blocks: int, seed: int) -> list[np.ndarray]:
    """Float32 features of a model whose blocks drift gradually (residual-stream-like)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    out = []
    for _ in range(n_blocks):
        mix = rng.standard_normal((d, d), dtype=np.float32) / np.sqrt(d)
        X = X + 0.5 * np.tanh(X @ mix)
        out.append(X.copy())
    return out


def _best(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each function, interleaved (a, b, a, b, …) against machine drift."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def bench_case(
    name: str,
    blocks_a: list[np.ndarray],
    blocks_b: list[np.ndarray] | None,
    *,
    unbiased: bool,
    sample_pairs: int,
    repeats: int,
) -> dict:
    """Time (a) and (b) on the same sampled pairs; project both to the whole case."""
    n = blocks_a[0].shape[0]
    if blocks_b is None:  # a symmetric model×model matrix: M(M-1)/2 off-diagonal pairs
        reps = blocks_a
        all_pairs = [(i, j) for i in range(len(reps)) for j in range(i + 1, len(reps))]
        left = right = reps
    else:
        left, right = blocks_a, blocks_b
        all_pairs = [(i, j) for i in range(len(left)) for j in range(len(right))]
    rng = np.random.default_rng(0)
    chosen = [all_pairs[k] for k in rng.choice(len(all_pairs), sample_pairs, replace=False)]
    n_reps = len(left) + (0 if blocks_b is None else len(right))

    # ours: statistics of every representation once (timed), then one cross term per pair
    start = time.perf_counter()
    stats_l = block_stats(left)
    stats_r = stats_l if blocks_b is None else block_stats(right)
    stats_seconds = time.perf_counter() - start
    stats_per_pair = stats_seconds / len(all_pairs)

    ours_vals, base_vals, ref_vals, ours_t, base_t = [], [], [], [], []
    for i, j in chosen:
        values = {}

        def ours(i=i, j=j, values=values):
            values["ours"] = linear_cka_from_stats(stats_l[i], stats_r[j], unbiased=unbiased)

        def base(i=i, j=j, values=values):
            values["base"] = baseline_cka(left[i], right[j], unbiased)

        best = _best({"ours": ours, "base": base}, repeats)
        ours_t.append(best["ours"] + stats_per_pair)
        base_t.append(best["base"])
        ours_vals.append(values["ours"])
        base_vals.append(values["base"])
        ref_vals.append(reference_cka(left[i], right[j], unbiased) if n <= 4000 else np.nan)
    ours_pair, base_pair = float(np.mean(ours_t)), float(np.mean(base_t))
    ref = np.array(ref_vals)
    return {
        "case": name,
        "n": n,
        "d": left[0].shape[1],
        "pairs": len(all_pairs),
        "representations": n_reps,
        "sampled_pairs": sample_pairs,
        "unbiased": unbiased,
        "stats_seconds": stats_seconds,
        "ours_s_per_pair": ours_pair,
        "baseline_s_per_pair": base_pair,
        "speedup": base_pair / ours_pair,
        "ours_case_s_projected": ours_pair * len(all_pairs),
        "baseline_case_s_projected": base_pair * len(all_pairs),
        "max_abs_diff_vs_baseline": float(np.max(np.abs(np.subtract(ours_vals, base_vals)))),
        "max_abs_diff_vs_float64_reference": (
            float(np.nanmax(np.abs(np.subtract(ours_vals, ref))))
            if np.isfinite(ref).any()
            else None
        ),
        "cka_values": [round(v, 6) for v in ours_vals],
    }


# -- memory -----------------------------------------------------------------------------------


def _peak_child(n: int, d: int) -> None:
    """Subprocess body: one linear unbiased CKA at (n, d); print its memory use in MB.

    ``tracemalloc`` sees every numpy allocation, so its peak during the call is the extra
    memory CKA needs on top of its inputs; the process's peak RSS is printed too.
    """
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d), dtype=np.float32)
    Y = X + rng.standard_normal((n, d), dtype=np.float32)
    before = _vm_hwm_mb()
    tracemalloc.start()
    value = linear_cka_from_stats(linear_stats(X), linear_stats(Y), unbiased=True)
    _, extra = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        json.dumps(
            {
                "cka": value,
                "extra_peak_mb": extra / 2**20,
                "rss_peak_before_mb": before,
                "rss_peak_mb": _vm_hwm_mb(),
            }
        )
    )


def _vm_hwm_mb() -> float:
    """Peak RSS of this process image (``VmHWM``; unlike ru_maxrss it restarts at exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def bench_peak_memory(n: int, d: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--_peak_child", str(n), str(d)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(
        n=n,
        d=d,
        inputs_mb=2 * n * d * 4 / 2**20,
        nxn_float64_mb=n * n * 8 / 2**20,
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 1,000 / 2,000 (seconds)")
    parser.add_argument("--sample_pairs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--peak_n", type=int, default=50_000)
    parser.add_argument("--_peak_child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._peak_child:
        _peak_child(*args._peak_child)
        return 0
    d, n_small, n_large = 768, 4000, 10_000
    if args.quick:
        n_small, n_large = 1000, 2000
    results = []
    for n in (n_small, n_large):
        a = vit_like_blocks(n, d, 13, seed=1)
        b = vit_like_blocks(n, d, 13, seed=2)
        for unbiased in (False, True):
            results.append(
                bench_case(
                    f"13x13 grid n={n} {'unbiased' if unbiased else 'biased'}",
                    a,
                    b,
                    unbiased=unbiased,
                    sample_pairs=args.sample_pairs if n == n_small else 1,
                    repeats=args.repeats,
                )
            )
            print(json.dumps(results[-1]), flush=True)
        del a, b
    rng = np.random.default_rng(3)
    shared = rng.standard_normal((n_large, d), dtype=np.float32)
    models = [
        shared + s * rng.standard_normal((n_large, d), dtype=np.float32)
        for s in np.linspace(0.2, 2.0, 20)
    ]
    results.append(
        bench_case(
            f"20x20 model matrix n={n_large} unbiased",
            models,
            None,
            unbiased=True,
            sample_pairs=1,
            repeats=args.repeats,
        )
    )
    print(json.dumps(results[-1]), flush=True)
    del models, shared
    peak = bench_peak_memory(args.peak_n if not args.quick else 20_000, d)
    print(json.dumps(peak), flush=True)
    print()
    print(
        "| case | pairs | baseline s/pair | ours s/pair | speedup | "
        "projected case (baseline → ours) | max abs diff vs baseline | vs float64 ref |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for r in results:
        ref = r["max_abs_diff_vs_float64_reference"]
        print(
            f"| {r['case']} | {r['pairs']} | {r['baseline_s_per_pair']:.3f} | "
            f"{r['ours_s_per_pair']:.3f} | **{r['speedup']:.1f}×** | "
            f"{r['baseline_case_s_projected']:.0f} s → {r['ours_case_s_projected']:.0f} s | "
            f"{r['max_abs_diff_vs_baseline']:.1e} | {'—' if ref is None else f'{ref:.1e}'} |"
        )
    print(
        f"\nmemory, linear unbiased CKA at n={peak['n']:,}, d={peak['d']}: "
        f"{peak['extra_peak_mb']:.1f} MB allocated at peak on top of the "
        f"{peak['inputs_mb']:.0f} MB float32 inputs (process peak RSS "
        f"{peak['rss_peak_before_mb']:.0f} MB before the call, {peak['rss_peak_mb']:.0f} MB "
        "after); one n×n float64 matrix would be "
        f"{peak['nxn_float64_mb']:,.0f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
