"""Benchmark: cost of ``--ci`` in the distance_matrix_computation stage, side by side.

One process, the same features, per metric of ``configs/similarity/default.json`` (linear CKA
unbiased and biased, RBF CKA σ = 0.4, Spearman RSA, mutual k-NN k = 10), interleaved:

  (a) **plain**: the stage's per-dataset work without ``--ci`` — ``write_matrices`` of a work
      item (the matrix, its HDF5/CSV/metadata files);
  (b) **--ci**: the same work item with ``ci=True`` (K = 20, seed 0) — the same matrix (bitwise,
      checked) plus the jackknife intervals, the ``se``/``ci_low``/``ci_high`` datasets and the
      long CSV (the stage draws no figure; the aggregation's heatmaps show the intervals).

Two parts are timed (``--parts``): ``stage`` — the whole per-metric work of (a) and (b), output
files included; ``compute`` — the matrix (and interval) computation alone.

Reading the caches is excluded (identical for both; including it would lower the ratio). The
machine is shared (2 cores, load 10–20 from other engineers), so wall times swing by 2×: BLAS
single-threaded and the CPU-time ratio (``time.process_time``) is the figure.

Sizes: ``digits`` — the digits demo's shape (46 models, 719 test rows, d = 64); ``scale`` —
M = 20 models, d = 768, ``--scale_n`` rows (default 10,000). Random related features
(``benchmarks/uncertainty_cost.py``'s generator: a shared signal plus model noise).

    export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
    nice uv run --frozen python benchmarks/similarity_ci.py --sizes digits
    nice uv run --frozen python benchmarks/similarity_ci.py --sizes scale --scale_n 4000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from uncertainty_cost import features  # noqa: E402

from sim_consistency.config.similarity import load_similarity_config  # noqa: E402
from sim_consistency.similarity import metric_slug  # noqa: E402
from sim_consistency.stages.distance_matrix_computation import (  # noqa: E402
    MetricOutput,
    WorkItem,
    _compute,
    write_matrices,
)

SIZES = {"digits": (46, 719, 64), "scale": (20, 10_000, 768)}


def _item(root: Path, spec, m: int, ci: bool, budget: int) -> WorkItem:
    slug = metric_slug(spec)
    folder = root / ("ci" if ci else "plain") / slug
    folder.mkdir(parents=True, exist_ok=True)
    ids = tuple(f"model_{i:02d}" for i in range(m))
    return WorkItem(
        dataset="bench",
        split="test",
        model_ids=ids,
        cache_paths=tuple(Path(f"{i}.h5") for i in ids),
        input_keys=("x",) * m,
        block=None,
        blocks=("last",) * m,
        normalize=True,
        outputs=(MetricOutput(spec, slug, folder, "key", "missing", "key"),),
        device="cpu",
        memory_budget=budget,
        ci=ci,
    )


def _matrix(folder: Path) -> np.ndarray:
    with h5py.File(folder / "similarity_matrix.h5") as f:
        return f["similarity_matrix"][()]


def _timed(run) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - w0, time.process_time() - c0


def compare(feats, spec, root: Path, repeats: int, budget: int, parts: list[str]) -> dict:
    """Best-of-``repeats`` CPU and wall seconds of (a) and (b) for one metric, interleaved.

    ``stage``: the whole ``write_matrices`` (computation and every output file);
    ``compute``: the matrix (and interval) computation alone.
    """
    items = {ci: _item(root, spec, len(feats), ci, budget) for ci in (False, True)}
    best = {(p, ci, c): np.inf for p in parts for ci in (False, True) for c in ("wall", "cpu")}
    for _ in range(repeats):
        for part in parts:
            for ci, item in items.items():
                if part == "stage":
                    wall, cpu = _timed(lambda item=item: write_matrices(item, feats))
                else:
                    wall, cpu = _timed(lambda item=item: _compute(item, item.outputs[0], feats))
                best[(part, ci, "wall")] = min(best[(part, ci, "wall")], wall)
                best[(part, ci, "cpu")] = min(best[(part, ci, "cpu")], cpu)
        if "stage" in parts:
            plain, with_ci = (_matrix(items[ci].outputs[0].folder) for ci in (False, True))
            if plain.tobytes() != with_ci.tobytes():
                raise AssertionError(f"{metric_slug(spec)}: --ci changed the point estimates")
    row: dict = {}
    for part in parts:
        for c in ("cpu", "wall"):
            plain, ci = best[(part, False, c)], best[(part, True, c)]
            row[f"{part}_plain_{c}_s"] = round(plain, 2)
            row[f"{part}_ci_{c}_s"] = round(ci, 2)
            row[f"{part}_ratio_{c}"] = round(ci / plain, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["digits"], choices=sorted(SIZES))
    parser.add_argument("--scale_n", type=int, default=SIZES["scale"][1])
    parser.add_argument("--metrics", nargs="+", default=None, help="metric slugs to run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--memory_budget", type=int, default=4 << 30)
    parser.add_argument(
        "--parts", nargs="+", default=["stage", "compute"], choices=("stage", "compute")
    )
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args()
    specs = load_similarity_config(REPO / "configs" / "similarity" / "default.json")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            m, n, d = SIZES[size]
            n = args.scale_n if size == "scale" else n
            feats = features(m, n, d)
            totals: dict[str, float] = {}
            for spec in specs:
                slug = metric_slug(spec)
                if args.metrics and slug not in args.metrics:
                    continue
                load = os.getloadavg()[0]
                row = {"size": size, "M": m, "n": n, "d": d, "metric": slug}
                row |= compare(
                    feats, spec, Path(tmp) / size, args.repeats, args.memory_budget, args.parts
                )
                row["load_1min"] = f"{load:.1f}->{os.getloadavg()[0]:.1f}"
                for key, value in row.items():
                    if key.endswith("_s"):
                        totals[key] = totals.get(key, 0.0) + value
                rows.append(row)
                print(json.dumps(row), flush=True)
            total = {"size": size, "M": m, "n": n, "d": d, "metric": "ALL (stage total)"}
            total |= {k: round(v, 2) for k, v in totals.items()}
            for part in args.parts:
                for c in ("cpu", "wall"):
                    plain = totals.get(f"{part}_plain_{c}_s", 0.0)
                    if plain > 0:
                        ratio = totals[f"{part}_ci_{c}_s"] / plain
                        total[f"{part}_ratio_{c}"] = round(ratio, 2)
            rows.append(total)
            print(json.dumps(total), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
