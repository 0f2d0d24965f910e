"""Benchmark: cost of the consistency p-values/intervals and of the soups' paired tests.

One process, the same inputs, side by side and interleaved, best of ``--repeats``:

* **consistency** (per pair of datasets, M models): (a) ``consistency`` — the table entry a
  stage without intervals computes (both methods); (b) ``consistency_tests`` — the same entry
  (bitwise, checked) plus the Mantel test (``--n_permutations``, default 999) and the
  bootstrap over models (``--n_bootstrap``, default 1000), both methods. Reported per pair of
  datasets: a study with D datasets has D(D-1)/2 pairs per metric.
* **soups** (one soup of 3 ingredients, n test images): (a) ``soup_improvement`` from
  accuracies; (b) plus ``soup_paired_tests`` (two paired bootstraps of 10,000 replicates and
  McNemar's test).

CPU seconds (``time.process_time``) and the ratio (b)/(a); the build machine is shared, so
read the CPU figures and run single-threaded BLAS:

    export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
    nice uv run --frozen python benchmarks/consistency_tests_cost.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim_consistency.similarity import consistency  # noqa: E402
from sim_consistency.soup_metrics import soup_improvement, soup_paired_tests  # noqa: E402
from sim_consistency.uncertainty import consistency_tests  # noqa: E402

METHODS = ("pearson", "spearman")


def matrices(m: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Two related symmetric (M, M) similarity matrices (shared structure plus noise)."""
    rng = np.random.default_rng(seed)
    ids = [f"model_{i:03d}" for i in range(m)]
    base = rng.uniform(size=(m, m))
    out = {}
    for name in ("a", "b"):
        x = base + 0.5 * rng.uniform(size=(m, m))
        x = (x + x.T) / 2
        np.fill_diagonal(x, 1.0)
        out[name] = pd.DataFrame(x, index=ids, columns=ids)
    return out


def best_cpu(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    cpu = dict.fromkeys(runs, np.inf)
    for _ in range(repeats):
        for name, run in runs.items():
            c0 = time.process_time()
            run()
            cpu[name] = min(cpu[name], time.process_time() - c0)
    return cpu


def consistency_row(m: int, n_perm: int, n_boot: int, repeats: int) -> dict[str, Any]:
    mats = matrices(m)
    for method in METHODS:  # the entry is bitwise the plain table's
        tests = consistency_tests(mats, method, n_permutations=n_perm, n_bootstrap=n_boot)
        plain = consistency(mats, method).loc["a", "b"]
        if tests["consistency"].iloc[0] != plain:
            raise AssertionError("consistency_tests changed the point statistic")
    cpu = best_cpu(
        {
            "plain": lambda: [consistency(mats, k) for k in METHODS],
            "tests": lambda: [
                consistency_tests(mats, k, n_permutations=n_perm, n_bootstrap=n_boot)
                for k in METHODS
            ],
        },
        repeats,
    )
    return {
        "what": "consistency, one pair of datasets, both methods",
        "M": m,
        "n_permutations": n_perm,
        "n_bootstrap": n_boot,
        "plain_cpu_ms": round(1e3 * cpu["plain"], 2),
        "with_tests_cpu_ms": round(1e3 * cpu["tests"], 1),
        "ratio_cpu": round(cpu["tests"] / cpu["plain"], 1),
    }


def soup_row(n: int, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    correct = {(m, "d"): (rng.uniform(size=n) < p).astype(float)
               for m, p in (("soup", 0.8), ("a", 0.78), ("b", 0.75), ("c", 0.7))}  # fmt: skip
    accuracy = pd.DataFrame(
        [(m, d, float(c.mean())) for (m, d), c in correct.items()],
        columns=["model_id", "dataset", "top1"],
    )
    soups = {"soup": ["a", "b", "c"]}
    cpu = best_cpu(
        {
            "plain": lambda: soup_improvement(accuracy, soups),
            "tests": lambda: soup_paired_tests(soup_improvement(accuracy, soups), soups, correct),
        },
        repeats,
    )
    return {
        "what": "soup vs 3 ingredients, one dataset, 10,000 bootstrap replicates",
        "n_images": n,
        "plain_cpu_ms": round(1e3 * cpu["plain"], 2),
        "with_tests_cpu_ms": round(1e3 * cpu["tests"], 1),
        "ratio_cpu": round(cpu["tests"] / cpu["plain"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", type=int, default=[20, 46, 64])
    parser.add_argument("--n_permutations", type=int, default=999)
    parser.add_argument("--n_bootstrap", type=int, default=1000)
    parser.add_argument("--images", nargs="+", type=int, default=[719, 10_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    for m in args.models:
        row = consistency_row(m, args.n_permutations, args.n_bootstrap, args.repeats)
        print(json.dumps(row), flush=True)
    for n in args.images:
        print(json.dumps(soup_row(n, args.repeats)), flush=True)
    print(json.dumps({"load_1min": f"{load:.1f}->{os.getloadavg()[0]:.1f}"}))


if __name__ == "__main__":
    main()
