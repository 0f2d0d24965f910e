"""Benchmark: cost of the jackknife intervals relative to the plain similarity matrix.

One process, the same random features (L2-normalised rows inside both functions, as the stage
runs them), side by side and interleaved, best of ``--repeats``:

  (a) **plain**: ``similarity_matrix(features, spec)`` — what a stage without intervals runs;
  (b) **with intervals**: ``similarity_matrix_ci(features, spec)`` — the same point matrix
      (bitwise, checked) plus the delete-a-group jackknife (K = 20) from per-group statistics.

Reported: CPU seconds (``time.process_time``) and wall seconds of each, the ratios (b)/(a)
(issue 20's target: ≤ 1.5) and the machine load (``os.getloadavg``) before and after. The build
machine is shared (load 15–19 on 2 cores while these were taken), so wall times swing by 2×
between repeats; run single-threaded BLAS (below) and read the CPU-time ratio.

Sizes: ``digits`` — the digits demo's shape (46 models, 719 test rows, d = 64) with random
features; ``scale`` — M = 20, n = 10,000, d = 768 (linear CKA; ``--scale_rbf`` adds RBF CKA).

    export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
    nice uv run --frozen python benchmarks/uncertainty_cost.py --sizes digits
    nice uv run --frozen python benchmarks/uncertainty_cost.py --sizes scale
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim_consistency.config.similarity import MetricSpec  # noqa: E402
from sim_consistency.similarity import similarity_matrix  # noqa: E402
from sim_consistency.uncertainty import similarity_matrix_ci  # noqa: E402

SIZES = {"digits": (46, 719, 64), "scale": (20, 10_000, 768)}
METRICS = {
    "linear_cka_unbiased": MetricSpec("cka", sim_kernel="linear", unbiased=True),
    "linear_cka_biased": MetricSpec("cka", sim_kernel="linear", unbiased=False),
    "rbf_cka_unbiased": MetricSpec("cka", sim_kernel="rbf", unbiased=True, sigma=0.4),
    "rsa_spearman": MetricSpec("rsa", rsa_method="correlation", corr_method="spearman"),
}


def features(m: int, n: int, d: int, seed: int = 0) -> list[np.ndarray]:
    """M related float32 representations: a shared signal plus model-specific noise."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, d)).astype(np.float32)
    return [
        (base @ rng.normal(size=(d, d)).astype(np.float32) / np.sqrt(d))
        + rng.normal(size=(n, d)).astype(np.float32)
        for _ in range(m)
    ]


def compare(feats: list[np.ndarray], spec: MetricSpec, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` wall and CPU seconds of (a) and (b), interleaved."""
    wall = {"plain": np.inf, "ci": np.inf}
    cpu = {"plain": np.inf, "ci": np.inf}
    for _ in range(repeats):
        for name, run in (
            ("plain", lambda: similarity_matrix(feats, spec)),
            ("ci", lambda: similarity_matrix_ci(feats, spec)),
        ):
            w0, c0 = time.perf_counter(), time.process_time()
            result = run()
            wall[name] = min(wall[name], time.perf_counter() - w0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
            if name == "plain":
                plain = result
            else:
                ci = result
        if not np.array_equal(plain, ci.point, equal_nan=True):
            raise AssertionError("the interval path changed the point estimates")
    return {
        "plain_cpu_s": round(cpu["plain"], 2),
        "with_ci_cpu_s": round(cpu["ci"], 2),
        "ratio_cpu": round(cpu["ci"] / cpu["plain"], 3),
        "plain_wall_s": round(wall["plain"], 2),
        "with_ci_wall_s": round(wall["ci"], 2),
        "ratio_wall": round(wall["ci"] / wall["plain"], 3),
        "median_se": float(np.nanmedian(ci.se[np.triu_indices(len(feats), 1)])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["digits"], choices=sorted(SIZES))
    parser.add_argument("--metrics", nargs="+", default=None, choices=sorted(METRICS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--scale_rbf", action="store_true", help="also RBF CKA at scale size")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        m, n, d = SIZES[size]
        feats = features(m, n, d)
        names = args.metrics or (
            sorted(METRICS)
            if size == "digits"
            else ["linear_cka_unbiased"] + (["rbf_cka_unbiased"] if args.scale_rbf else [])
        )
        for name in names:
            load_before = os.getloadavg()[0]
            row = {"size": size, "M": m, "n": n, "d": d, "metric": name}
            row |= compare(feats, METRICS[name], args.repeats if size == "digits" else 1)
            row["load_1min"] = f"{load_before:.1f}->{os.getloadavg()[0]:.1f}"
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
