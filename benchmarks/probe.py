"""Benchmark: linear-probe protocols — rep2rep vs fast vs scikit-learn LogisticRegression(lbfgs).

Two feature sets:

* ``digits``: real cached features (last block) of timm ``test_vit`` on the shipped digits
  dataset (train → probe, test → score), extracted into a temporary project;
* ``random``: Gaussian class clusters, 10,000 × 768 train / 5,000 test rows, 100 classes (the
  cluster noise is set so that accuracy is far from both chance and 100 %).

For each set, the full sweep of each protocol (:func:`sim_consistency.probe.linear_probe`: the
64-point weight-decay search on a stratified 20 % validation split, refit on all training rows)
is timed; runs are interleaved and the best of ``--repeats`` kept (rep2rep: ``--rep2rep_repeats``).
scikit-learn is timed at the C equivalent to fast's chosen λ (one fit on all training rows,
same L2-normalised features) — and, with ``--sklearn_sweep``, over the same search.

    python benchmarks/probe.py [--device cpu|cuda] [--repeats 3] [--rep2rep_repeats 1]
        [--sets digits random] [--random_shape 10000 5000 768 100] [--sklearn_sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from sim_consistency.data import build_digits
from sim_consistency.features import open_cache
from sim_consistency.probe import (
    WEIGHT_DECAY_GRID,
    coarse_to_fine_search,
    linear_probe,
    sklearn_C,
    validation_split,
)
from sim_consistency.project import ProjectLocation
from sim_consistency.stages import feature_extraction


def digits_features(root: Path) -> tuple[np.ndarray, ...]:
    """Extract test_vit's digits features (train, test) under ``root``; return the last block."""
    location = ProjectLocation.resolve(root).create()
    build_digits(location)
    config = root / "models.json"
    config.write_text(json.dumps({"vit": {"source": "timm", "model_name": "test_vit"}}))
    code = feature_extraction.main(
        ["--project_root", str(root), "--models_config", str(config), "--datasets", "wds/digits",
         "--splits", "train", "test", "--num_workers", "0", "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    out = []
    for split in ("train", "test"):
        with open_cache(location.feature_file("wds/digits", split, "vit")) as cache:
            out += [cache.block(cache.block_names[-1]), cache.labels]
    return tuple(out)


def random_features(
    n_train: int = 10_000,
    n_test: int = 5_000,
    d: int = 768,
    n_classes: int = 100,
    noise=8.0,
    *,
    offset: float = 0.0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, ...]:
    """Gaussian clusters: class means ~ N(0, I), rows = mean + noise · N(0, I) + offset.

    Drawn from ``rng`` (default: a fresh ``np.random.default_rng(0)``).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    means = rng.normal(size=(n_classes, d))
    out = []
    for n in (n_train, n_test):
        y = rng.integers(0, n_classes, n)
        out += [(means[y] + noise * rng.normal(size=(n, d)) + offset).astype(np.float32), y]
    return tuple(out)


def _normalized(X: np.ndarray) -> np.ndarray:
    X = X.astype(np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def sklearn_fit(X_tr, y_tr, X_te, y_te, C: float) -> tuple[float, float]:
    """Return (seconds, test top-1) of LogisticRegression(lbfgs) at ``C``."""
    start = time.perf_counter()
    model = LogisticRegression(C=C, max_iter=10_000, tol=1e-6).fit(_normalized(X_tr), y_tr)
    seconds = time.perf_counter() - start
    return seconds, float(model.score(_normalized(X_te), y_te))


def sklearn_sweep(X_tr, y_tr, X_te, y_te, seed: int = 0) -> tuple[float, float, float]:
    """The fast protocol's search and refit with scikit-learn as the solver."""
    start = time.perf_counter()
    classes = np.unique(y_tr)
    fit_rows, val_rows = validation_split(np.searchsorted(classes, y_tr), seed=seed)
    Xn = _normalized(X_tr)

    def evaluate(i: int) -> float:
        C = sklearn_C(float(WEIGHT_DECAY_GRID[i]), fit_rows.size)
        model = LogisticRegression(C=C, max_iter=10_000, tol=1e-4)
        return float(model.fit(Xn[fit_rows], y_tr[fit_rows]).score(Xn[val_rows], y_tr[val_rows]))

    best, _ = coarse_to_fine_search(evaluate, WEIGHT_DECAY_GRID.size)
    wd = float(WEIGHT_DECAY_GRID[best])
    _, top1 = sklearn_fit(X_tr, y_tr, X_te, y_te, sklearn_C(wd, y_tr.size))
    return time.perf_counter() - start, top1, wd


def bench(name: str, data, args) -> list[dict]:
    X_tr, y_tr, X_te, y_te = data
    rows: dict[str, dict] = {}

    def record(method: str, seconds: float, top1: float, **extra) -> None:
        old = rows.get(method)
        if old is None or seconds < old["seconds"]:
            rows[method] = {"features": name, "method": method, "seconds": seconds, "top1": top1,
                            **extra}  # fmt: skip

    for rep in range(max(args.repeats, args.rep2rep_repeats)):
        if rep < args.repeats:
            r = linear_probe(X_tr, y_tr, X_te, y_te, protocol="fast", device=args.device)
            record("fast", r["fit_seconds"], r["top1"], weight_decay=r["weight_decay"],
                   n_fits=len(r["val_curve"]) + 1)  # fmt: skip
            fast = r
            C = sklearn_C(r["weight_decay"], y_tr.size)
            seconds, top1 = sklearn_fit(X_tr, y_tr, X_te, y_te, C)
            record("sklearn_lbfgs_one_fit_at_fast_C", seconds, top1, weight_decay=r["weight_decay"],
                   n_fits=1)  # fmt: skip
        if rep < args.rep2rep_repeats:
            r = linear_probe(X_tr, y_tr, X_te, y_te, protocol="rep2rep", device=args.device)
            record("rep2rep", r["fit_seconds"], r["top1"], weight_decay=r["weight_decay"],
                   lr=r["lr"], n_fits=len(r["val_curve"]) + 1)  # fmt: skip
        print(json.dumps(list(rows.values())), flush=True)
    if args.sklearn_sweep:
        seconds, top1, wd = sklearn_sweep(X_tr, y_tr, X_te, y_te)
        record("sklearn_lbfgs_sweep", seconds, top1, weight_decay=wd)
    base = rows["rep2rep"]["seconds"]
    for row in rows.values():
        row["speedup_vs_rep2rep"] = base / row["seconds"]
        row["top1_minus_fast_pp"] = 100 * (row["top1"] - fast["top1"])
    return list(rows.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rep2rep_repeats", type=int, default=1)
    parser.add_argument("--sets", nargs="+", default=["digits", "random"])
    parser.add_argument("--sklearn_sweep", action="store_true")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    parser.add_argument(
        "--random_shape",
        nargs=4,
        type=int,
        default=[10_000, 5_000, 768, 100],
        metavar=("N_TRAIN", "N_TEST", "D", "N_CLASSES"),
        help="size of the random set (default 10000 5000 768 100)",
    )
    args = parser.parse_args()
    print(
        f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}, device: {args.device}"
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            if name == "digits":
                data = digits_features(Path(tmp) / "root")
            else:
                data = random_features(*args.random_shape)
            print(f"{name}: train {data[0].shape}, test {data[2].shape}", flush=True)
            results += bench(name, data, args)
    header = "| features | method | seconds | speed-up vs rep2rep | test top-1 | Δ vs fast (pp) |"
    print(header + "\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['features']} | {r['method']} | {r['seconds']:.1f} | "
              f"{r['speedup_vs_rep2rep']:.1f}× | {100 * r['top1']:.2f} % | "
              f"{r['top1_minus_fast_pp']:+.2f} |")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
