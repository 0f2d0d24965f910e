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
        [--solver_trial]

``--solver_trial`` puts the solver on trial instead: :func:`fit_logreg` (hand-written L-BFGS
whose line search costs one softmax per trial) against ``torch.optim.LBFGS`` with
``line_search_fn="strong_wolfe"`` in the same preconditioned basis with the same warm starts,
objective and tolerances (:func:`fit_logreg_torch`), each running the fast protocol's whole
path (search + float64 refit), interleaved in one process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from sim_consistency.probe import (
    WEIGHT_DECAY_GRID,
    coarse_to_fine_search,
    linear_probe,
    sklearn_C,
    validation_split,
)
from sim_consistency.probe.solvers import (
    LogRegFit,
    Spectrum,
    feature_spectrum,
    fit_logreg,
    rotate_features,
)


def digits_features(root: Path) -> tuple[np.ndarray, ...]:
    """Extract test_vit's digits features (train, test) under ``root``; return the last block."""
    from sim_consistency.data import build_digits
    from sim_consistency.features import open_cache
    from sim_consistency.project import ProjectLocation
    from sim_consistency.stages import feature_extraction

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


# -- the solver on trial: torch.optim.LBFGS(strong Wolfe) in fit_logreg's basis -------------


def fit_logreg_torch(
    X: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    *,
    l2: float,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    spectrum: Spectrum | None = None,
    rotated: torch.Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    history: int = 20,
) -> LogRegFit:
    """``fit_logreg``'s problem solved by ``torch.optim.LBFGS(line_search_fn="strong_wolfe")``.

    Same objective, same variables (``θ = [V, b'/√C]`` in the centred covariance eigenbasis,
    ``V = D⁻¹ Uᵀ W``, ``D = diag((s/C + λ)^-½)``), same warm start (``init`` mapped into θ),
    same history and the same stopping rule on the largest absolute gradient entry
    (``tolerance_grad=tol``; torch also stops when the loss or the step changes by less than
    ``tolerance_change`` = 1e-12, as ``fit_logreg`` stops below a 1e-12 loss change). The
    closure returns the value and the analytic gradient (two ``n·d·C`` products per
    evaluation; no autograd). Returns ``LogRegFit`` with ``n_evals`` = closure calls.
    """
    spectrum = feature_spectrum(X) if spectrum is None else spectrum
    s, U, mean = (t.to(X.device, torch.float64) for t in spectrum)
    scale64 = torch.rsqrt(s / n_classes + l2)
    bias_scale = math.sqrt(n_classes)
    n, d = X.shape
    dt, dev = X.dtype, X.device
    A = rotate_features(X, spectrum) if rotated is None else rotated
    sc = torch.cat([scale64, scale64.new_full((1,), bias_scale)]).to(dt)[None, :]
    l2pen = l2 * torch.cat([scale64 * scale64, scale64.new_zeros(1)]).to(dt)[None, :]
    theta = torch.zeros(n_classes, d + 1, dtype=dt, device=dev)
    if init is not None:
        W0, b0 = (t.detach().to(dev, torch.float64) for t in init[:2])
        theta[:, :d] = ((W0.T @ U) / scale64).to(dt)
        theta[:, d] = ((b0 + mean @ W0) / bias_scale).to(dt)
    theta.requires_grad_(True)
    y = y.to(dev)
    onehot = torch.zeros(n_classes, n, dtype=dt, device=dev)
    onehot[y, torch.arange(n, device=dev)] = 1.0
    n_evals = 0
    optimizer = torch.optim.LBFGS(
        [theta], lr=1.0, max_iter=max_iter, max_eval=max(max_iter * 5 // 4, 25),
        tolerance_grad=tol, tolerance_change=1e-12, history_size=history,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    @torch.no_grad()
    def closure() -> torch.Tensor:
        nonlocal n_evals
        n_evals += 1
        th = theta.detach()
        Z = (sc * th) @ A.T  # (C, n) class scores
        lse = torch.logsumexp(Z, dim=0)
        P = torch.exp(Z - lse)
        f = lse.mean() - (Z * onehot).sum() / n + 0.5 * (l2pen * th * th).sum()
        theta.grad = torch.addcmul(l2pen * th, sc / n, (P - onehot) @ A)
        return f

    optimizer.step(closure)
    th = theta.detach()
    W = ((th[:, :d].to(torch.float64) * scale64) @ U.T).T.contiguous()
    b = th[:, d].to(torch.float64) * bias_scale - mean @ W
    return LogRegFit(W.to(dt), b.to(dt), n_evals)


def objective(
    X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, l2: float
) -> float:
    """The penalised mean cross-entropy of ``(W, b)`` on the rows, in float64."""
    X, W, b = X.double(), W.double(), b.double()
    ce = torch.nn.functional.cross_entropy(X @ W + b, y.to(X.device))
    return float(ce + 0.5 * l2 * (W * W).sum())


SOLVERS = {"fit_logreg": fit_logreg, "torch_lbfgs_strong_wolfe": fit_logreg_torch}


def solver_path(solve, X_tr, y_tr, X_te, y_te, *, device: str, seed: int = 0) -> dict:
    """The fast protocol's path with ``solve`` as the solver: the same search (float32, tol
    1e-4, warm starts from the nearest solution, one spectrum and rotation) and the float64
    refit (tol 1e-6) at the chosen λ. Returns seconds, evaluations, chosen λ, val curve, test
    top-1 and the refit's objective."""
    dev = torch.device(device)
    classes = np.unique(y_tr)
    y_all = torch.as_tensor(np.searchsorted(classes, y_tr), device=dev)
    fit_rows, val_rows = validation_split(y_all.cpu().numpy(), seed=seed)
    X = torch.nn.functional.normalize(torch.as_tensor(X_tr, device=dev, dtype=torch.float32), dim=1)
    Xte = torch.nn.functional.normalize(
        torch.as_tensor(X_te, device=dev, dtype=torch.float32), dim=1
    )
    yte = torch.as_tensor(np.searchsorted(classes, y_te), device=dev)
    fit_rows_t = torch.as_tensor(fit_rows, device=dev)
    val_rows_t = torch.as_tensor(val_rows, device=dev)
    _sync(dev)
    start = time.perf_counter()
    X_fit, y_fit = X[fit_rows_t], y_all[fit_rows_t]
    X_val, y_val = X[val_rows_t], y_all[val_rows_t]
    spectrum = feature_spectrum(X_fit)
    rotated = rotate_features(X_fit, spectrum)
    solutions: dict[int, LogRegFit] = {}
    n_evals = 0

    def evaluate(i: int) -> float:
        nonlocal n_evals
        init = solutions[min(solutions, key=lambda j: (abs(j - i), -j))] if solutions else None
        fit = solve(X_fit, y_fit, classes.size, l2=float(WEIGHT_DECAY_GRID[i]), init=init,
                    spectrum=spectrum, rotated=rotated, max_iter=1000, tol=1e-4)  # fmt: skip
        n_evals += fit.n_evals
        solutions[i] = fit.without_state() if hasattr(fit, "without_state") else fit
        return float(((X_val @ fit.W + fit.b).argmax(dim=1) == y_val).float().mean())

    best, scores = coarse_to_fine_search(evaluate, WEIGHT_DECAY_GRID.size)
    wd = float(WEIGHT_DECAY_GRID[best])
    refit = solve(X.double(), y_all, classes.size, l2=wd, init=solutions[best], spectrum=spectrum,
                  max_iter=1000, tol=1e-6)  # fmt: skip
    _sync(dev)
    seconds = time.perf_counter() - start
    n_evals += refit.n_evals
    W, b = refit.W, refit.b
    return {
        "seconds": seconds,
        "n_evals": n_evals,
        "weight_decay": wd,
        "val_curve": {int(k): v for k, v in sorted(scores.items())},
        "top1": float(((Xte.double() @ W + b).argmax(dim=1) == yte).float().mean()),
        "objective": objective(X, y_all, W, b, wd),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def solver_trial(name: str, data, args) -> list[dict]:
    """Both solvers on the same path, interleaved, best of ``--repeats`` kept."""
    rows: dict[str, dict] = {}
    for _ in range(args.repeats):
        for solver, solve in SOLVERS.items():
            r = solver_path(solve, *data, device=args.device)
            if solver not in rows or r["seconds"] < rows[solver]["seconds"]:
                rows[solver] = {"features": name, "solver": solver, **r}
        print(json.dumps(list(rows.values())), flush=True)
    base = rows["fit_logreg"]
    for row in rows.values():
        row["slowdown_vs_fit_logreg"] = row["seconds"] / base["seconds"]
        row["same_val_curve"] = row["val_curve"] == base["val_curve"]
        row["objective_minus_fit_logreg"] = row["objective"] - base["objective"]
    return list(rows.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rep2rep_repeats", type=int, default=1)
    parser.add_argument("--sets", nargs="+", default=["digits", "random"])
    parser.add_argument("--sklearn_sweep", action="store_true")
    parser.add_argument(
        "--solver_trial",
        action="store_true",
        help="instead of the protocols: fit_logreg vs torch.optim.LBFGS(strong_wolfe) on the "
        "fast protocol's path (same basis, warm starts, objective and tolerances)",
    )
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
            if args.solver_trial:
                results += solver_trial(name, data, args)
            else:
                results += bench(name, data, args)
    if args.solver_trial:
        print(
            "| features | solver | seconds | × fit_logreg's time | evaluations | λ | same val "
            "curve | test top-1 | objective − fit_logreg's |\n|---|---|---|---|---|---|---|---|---|"
        )
        for r in results:
            print(f"| {r['features']} | {r['solver']} | {r['seconds']:.2f} | "
                  f"{r['slowdown_vs_fit_logreg']:.2f} | {r['n_evals']} | {r['weight_decay']:.3g} | "
                  f"{r['same_val_curve']} | {100 * r['top1']:.2f} % | "
                  f"{r['objective_minus_fit_logreg']:+.2e} |")  # fmt: skip
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))
        return
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
