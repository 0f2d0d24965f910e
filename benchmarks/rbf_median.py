"""Benchmark: the exact median of squared distances (RBF ``sigma_median``) — ours vs the simplest.

One process, the same L2-normalised Gaussian rows (n × d), two exact methods side by side:

  (a) **streamed selection** (ours, :func:`sim_consistency.similarity.median_sq_distance`):
      counting passes over distance slabs; the candidates inside a sampled bracket are kept
      and partitioned, and when too many fall inside, a histogram over the bracket's float bit
      patterns narrows it. Memory O(slab · n + budget);
  (b) **materialise and partition** (the simplest exact method): write the n(n−1)/2 upper
      distances of the same slabs into one float64 array and ``np.partition`` it at the median
      ranks. Memory 4·n² bytes (n = 50,000: 10 GB; n = 100,000: 40 GB).

Both use the same distance values (the same slabs), so they must agree bit for bit; the
benchmark checks it. Time: best of ``--repeats``, interleaved; peak memory: ``tracemalloc``
peak of one extra run of each.

    nice uv run --frozen python benchmarks/rbf_median.py [--sizes 2000 5000 10000] [--dim 768]
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np

from sim_consistency.similarity import median_sq_distance
from sim_consistency.similarity._arrays import column_mean
from sim_consistency.similarity.cka import DEFAULT_SLAB_ROWS, _upper_values


def materialised_median(X: np.ndarray, slab_rows: int = DEFAULT_SLAB_ROWS) -> float:
    """The median of all n² squared distances by storing the upper triangle and partitioning."""
    Xc = X.astype(np.float64) - column_mean(X, slab_rows)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    n = Xc.shape[0]
    upper = np.empty(n * (n - 1) // 2)
    at = 0
    for values in _upper_values(Xc, sq, slab_rows):
        upper[at : at + values.size] = values
        at += values.size
    total = n * n
    positions = [(total - 1) // 2] if total % 2 else [total // 2 - 1, total // 2]
    ranks = sorted({(p - n) // 2 for p in positions if p >= n})
    part = np.partition(upper, ranks) if ranks else upper
    return float(np.mean([0.0 if p < n else part[(p - n) // 2] for p in positions]))


METHODS = {"streamed_selection": median_sq_distance, "materialise_partition": materialised_median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        X = np.random.default_rng(0).normal(size=(n, args.dim)).astype(np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        best = {name: np.inf for name in METHODS}
        value = {}
        for _ in range(args.repeats):
            for name, method in METHODS.items():
                start = time.perf_counter()
                value[name] = method(X)
                best[name] = min(best[name], time.perf_counter() - start)
        peak = {}
        for name, method in METHODS.items():
            tracemalloc.start()
            method(X)
            peak[name] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        a, b = value["streamed_selection"], value["materialise_partition"]
        row = {
            "n": n,
            "d": args.dim,
            **{f"{k}_seconds": v for k, v in best.items()},
            **{f"{k}_peak_MB": v / 1e6 for k, v in peak.items()},
            "bitwise_equal": a == b,
            "median": a,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("| n × d | streamed selection (s) | materialise + partition (s) | ratio | "
          "peak MB streamed | peak MB materialised | bitwise equal |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for r in rows:
        ratio = r["streamed_selection_seconds"] / r["materialise_partition_seconds"]
        print(f"| {r['n']:,} × {r['d']} | {r['streamed_selection_seconds']:.2f} | "
              f"{r['materialise_partition_seconds']:.2f} | {ratio:.2f} | "
              f"{r['streamed_selection_peak_MB']:.0f} | {r['materialise_partition_peak_MB']:.0f} | "
              f"{r['bitwise_equal']} |")  # fmt: skip


if __name__ == "__main__":
    main()
