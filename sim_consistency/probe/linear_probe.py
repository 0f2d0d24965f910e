"""Linear probes on cached features: the Rep2Rep protocol and the fast exact protocol.

:func:`linear_probe` trains a linear classifier on ``(X_train, y_train)``, picks its
hyper-parameters on a stratified validation split carved from the training rows, refits and
reports test metrics. Two protocols share everything but the solver:

* ``"rep2rep"`` — comparable with Rep2Rep and CLIP_benchmark: rows L2-normalised; an
  ``nn.Linear`` trained with AdamW and a per-step cosine schedule (batch 1024, 20 epochs,
  :func:`~sim_consistency.probe.solvers.fit_rep2rep`) for every learning rate in
  ``{1e-1, 1e-2, 1e-3, 1e-4}``; the weight decay searched coarse-to-fine on the 64-point log
  grid ``1e-6 … 1e1`` (:data:`WEIGHT_DECAY_GRID`); refit on all training rows with the chosen
  ``(lr, weight_decay)``.
* ``"fast"`` (default) — rows L2-normalised; multinomial logistic regression with an L2 penalty
  ``λ`` (reported as ``weight_decay``) solved exactly by full-batch L-BFGS
  (:func:`~sim_consistency.probe.solvers.fit_logreg`), each fit warm-started from the solution
  (and its class scores) at the nearest λ already solved (strongest penalty first), in the rows'
  centred eigenbasis shared by the whole path, the same grid and search, in
  float32; the refit runs in float64 (scikit-learn's precision) so that its test predictions
  match ``LogisticRegression(C=1/(n·λ))``; ``lr`` is ``None``.

The search (CLIP_benchmark's ``find_peak``, adapted to 64 points): score 8 grid points one
decade apart, then around the best so far its neighbours at ±8, ±4, ±2 and ±1 grid steps; the
best validation top-1 wins and **ties go to the larger decay** (then to the larger learning
rate). Every point scored is kept in ``val_curve``.

``search="rep2rep"`` reproduces Rep2Rep's own choices instead (its ``RegularizationTuner`` and
``HyperparameterTuner``, ``lciernik/similarity_consistency``,
``sim_consistency/tasks/{regularization,hyperparameter}_tuner.py``): the validation split is
scikit-learn's ``train_test_split(stratify=y, random_state=seed)`` (in its row order); the
coarse points are scored in ascending order and a tie goes to the later (larger) decay; then
only the two neighbours at ±4, ±2, ±1 steps are scored and the peak moves only to a strictly
better one (a tie between the two goes to the larger decay); across learning rates (in the
order given) a later rate wins only if strictly better; and the Rep2Rep trainer draws its
initialisation and shuffles in Rep2Rep's random order
(:func:`~sim_consistency.probe.solvers.fit_rep2rep` ``rng="rep2rep"``).

``val_proportion=0`` (Rep2Rep's ``--val_proportion 0``) searches nothing: one fit on all
training rows with the fixed ``reg_lambda`` (and the single learning rate in ``lrs``).
``regularization`` (``weight_decay``, ``L1``, ``L2``; Rep2Rep protocol only) says what λ is.

Metrics (:func:`classification_metrics`): top-1, top-5 (NaN with fewer than 5 classes),
balanced accuracy (mean recall over the classes present in the test labels) and per-class
recall (:mod:`sim_consistency.probe.head` scores a model's own logits the same way).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from sim_consistency.device import resolve_device
from sim_consistency.errors import ConfigError, DataError
from sim_consistency.finite import check_finite
from sim_consistency.jsonable import jsonable
from sim_consistency.probe.solvers import (
    REGULARIZATIONS,
    LogRegFit,
    feature_spectrum,
    fit_logreg,
    fit_rep2rep,
    rotate_features,
    sklearn_C,
)
from sim_consistency.progress import progress_bar

__all__ = [
    "PROTOCOLS",
    "REP2REP_LRS",
    "SEARCH_RULES",
    "WEIGHT_DECAY_GRID",
    "classification_metrics",
    "coarse_to_fine_search",
    "fewshot_indices",
    "linear_probe",
    "linear_probe_blocks",
    "validation_split",
]

PROTOCOLS = ("fast", "rep2rep")

#: The 64-point log grid of weight decays (λ for ``fast``) searched by both protocols.
WEIGHT_DECAY_GRID: npt.NDArray[np.float64] = np.logspace(-6, 1, 64)

#: Learning rates of the Rep2Rep protocol.
REP2REP_LRS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)

#: How hyper-parameters are searched: ours, or exactly as Rep2Rep does (module docstring).
SEARCH_RULES = ("simc", "rep2rep")

#: Coarse points (one per decade of the 64-point grid) and the refinement half-widths.
_N_COARSE = 8
_SPANS = (8, 4, 2, 1)
#: Rep2Rep's refinement half-widths (``RegularizationTuner.tune_lambda``: 4, halved to 1).
_REP2REP_SPANS = (4, 2, 1)


# -- splits -----------------------------------------------------------------------------------


def validation_split(
    y: npt.ArrayLike, *, val_proportion: float = 0.2, seed: int = 0, rule: str = "simc"
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Return ``(fit_rows, val_rows)``: a seeded, class-stratified split of the training rows.

    ``rule="simc"``: each class sends ``round(count · val_proportion)`` of its rows, drawn with
    ``np.random.default_rng(seed)``, to validation, but always keeps at least one row for
    fitting (a class with a single row is never validated on); both arrays sorted.
    ``rule="rep2rep"``: Rep2Rep's ``train_test_split(arange(n), test_size=val_proportion,
    stratify=y, random_state=seed)``, both arrays in the order it returns them (the order of
    the rows Rep2Rep's ``Subset`` feeds its data loader).

    Args:
        y: labels of the training rows, (n,).
        val_proportion: fraction of each class held out, in (0, 1).
        seed: the run seed.
        rule: one of :data:`SEARCH_RULES`.

    Returns:
        Two disjoint int64 index arrays that together cover ``range(n)``.
    """
    if not 0.0 < val_proportion < 1.0:
        raise ConfigError(f"val_proportion must be in (0, 1) (got {val_proportion!r}).")
    if rule not in SEARCH_RULES:
        raise ConfigError(f"search rule must be one of {', '.join(SEARCH_RULES)} (got {rule!r}).")
    y = np.asarray(y)
    if rule == "rep2rep":
        from sklearn.model_selection import train_test_split

        try:
            fit_part, val_part = train_test_split(
                np.arange(y.size), test_size=val_proportion, stratify=y, random_state=seed
            )
        except ValueError as exc:  # a class too small to stratify, or too few rows
            raise DataError(f"validation split (Rep2Rep's train_test_split): {exc}") from None
        return np.asarray(fit_part, dtype=np.int64), np.asarray(val_part, dtype=np.int64)
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        n_val = min(int(round(rows.size * val_proportion)), rows.size - 1)
        val.append(rows[:n_val])
    val_rows = np.sort(np.concatenate(val)).astype(np.int64)
    fit_rows = np.setdiff1d(np.arange(y.size), val_rows).astype(np.int64)
    return fit_rows, val_rows


def fewshot_indices(
    y: npt.ArrayLike, k: int, *, seed: int = 0, candidates: npt.ArrayLike | None = None
) -> npt.NDArray[np.int64]:
    """Return sorted row indices of ``k`` rows per class, drawn with a fixed seed.

    Args:
        y: labels, (n,).
        k: rows per class (``>= 1``).
        seed: seed of ``np.random.default_rng``.
        candidates: rows allowed in the sample (default: all); the probe passes the rows left
            after the validation split, so validation rows never enter training.

    Raises:
        ConfigError: ``k < 1``.
        DataError: a class has fewer than ``k`` candidate rows.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"fewshot_k must be a positive integer (got {k!r}).")
    y = np.asarray(y)
    pool = np.arange(y.size) if candidates is None else np.asarray(candidates, dtype=np.int64)
    rng = np.random.default_rng(seed)
    picked: list[np.ndarray] = []
    for label in np.unique(y):
        rows = pool[y[pool] == label]
        if rows.size < k:
            raise DataError(
                f"few-shot: class {label} has {rows.size} training rows outside the validation "
                f"split, fewer than k={k}. Lower --fewshot_k or --val_proportion."
            )
        picked.append(rng.choice(rows, size=k, replace=False))
    return np.sort(np.concatenate(picked)).astype(np.int64)


# -- metrics ----------------------------------------------------------------------------------


def classification_metrics(
    scores: npt.ArrayLike, y: npt.ArrayLike, *, classes: Sequence[Any] | None = None
) -> dict[str, Any]:
    """Return top-1, top-5, balanced accuracy and per-class recall of class scores.

    Args:
        scores: (n, C) class scores (logits or probabilities); column j is class j.
        y: true column indices, (n,) in ``[0, C)``.
        classes: label of each column for ``per_class_recall``'s keys (default ``0 … C-1``).

    Returns:
        ``top1``, ``top5`` (NaN when C < 5), ``balanced_acc`` (mean recall over the classes
        present in ``y``) and ``per_class_recall`` (``{label: recall}`` for those classes).
    """
    scores = np.asarray(scores)
    y = np.asarray(y)
    n_classes = scores.shape[1]
    labels = list(range(n_classes)) if classes is None else list(classes)
    pred = scores.argmax(axis=1)
    top1 = float(np.mean(pred == y))
    if n_classes >= 5:
        top5_cols = np.argpartition(-scores, 4, axis=1)[:, :5]
        top5 = float(np.mean((top5_cols == y[:, None]).any(axis=1)))
    else:
        top5 = float("nan")
    recall = {}
    for c in np.unique(y):
        rows = y == c
        recall[jsonable(labels[int(c)])] = float(np.mean(pred[rows] == c))
    balanced = float(np.mean(list(recall.values())))
    return {"top1": top1, "top5": top5, "balanced_acc": balanced, "per_class_recall": recall}


# -- search -----------------------------------------------------------------------------------


def coarse_to_fine_search(
    evaluate: Callable[[int], float], n_grid: int = 64, *, rule: str = "simc"
) -> tuple[int, dict[int, float]]:
    """Return ``(best_index, scores)`` of a coarse-to-fine search over grid indices.

    ``rule="simc"``: scores 8 evenly spaced indices (largest first), then, around the best so
    far, the indices ±8, ±4, ±2, ±1 away (CLIP_benchmark's ``find_peak`` halving). Higher
    scores win; a tie goes to the larger index (the larger weight decay on an ascending grid).

    ``rule="rep2rep"``: Rep2Rep's ``RegularizationTuner.tune_lambda``: the 8 coarse indices in
    ascending order (a tie goes to the later one), then for spans 4, 2, 1 only the two
    neighbours (never the peak itself; a tie between them goes to the larger), and the peak
    moves only when a neighbour scores strictly higher.

    Each index is evaluated at most once.

    Args:
        evaluate: grid index -> validation score.
        n_grid: grid size.
        rule: one of :data:`SEARCH_RULES`.

    Returns:
        The chosen index and every evaluated ``{index: score}``.
    """
    if rule not in SEARCH_RULES:
        raise ConfigError(f"search rule must be one of {', '.join(SEARCH_RULES)} (got {rule!r}).")
    scores: dict[int, float] = {}

    def score(i: int) -> float:
        if i not in scores:
            scores[i] = evaluate(i)
        return scores[i]

    def peak(indices: Sequence[int]) -> int:
        for i in indices:
            score(i)
        return max(indices, key=lambda i: (scores[i], i))

    coarse = np.linspace(0, n_grid - 1, _N_COARSE).round().astype(int)
    if rule == "rep2rep":
        best = int(coarse[0])
        for i in coarse.tolist():  # find_peak: `if max_acc <= acc` keeps the later of ties
            if score(i) >= scores[best]:
                best = i
        for span in _REP2REP_SPANS:
            sides = [i for i in (max(best - span, 0), min(best + span, n_grid - 1)) if i != best]
            if not sides:
                break
            challenger = sides[0]
            for i in sides:
                if score(i) >= scores[challenger]:
                    challenger = i
            if scores[challenger] > scores[best]:
                best = challenger
        return best, scores
    best = peak(coarse[::-1].tolist())
    for span in _SPANS:
        around = sorted({max(best - span, 0), best, min(best + span, n_grid - 1)}, reverse=True)
        best = peak(around)
    return best, scores


# -- the probe --------------------------------------------------------------------------------


def _check_features(name: str, X: np.ndarray, n_labels: int) -> None:
    if X.ndim != 2:
        raise DataError(f"linear_probe: {name} must be 2-D (n, d) (got shape {X.shape}).")
    if X.shape[0] != n_labels:
        raise DataError(f"linear_probe: {name} has {X.shape[0]} rows but {n_labels} labels.")
    check_finite(
        X,
        f"linear_probe: {name}",
        hint="The features are corrupt. Re-extract them (feature_extraction --force).",
    )


def _prepare_labels(
    y_train: np.ndarray, y_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    classes = np.unique(y_train)
    if classes.size < 2:
        raise DataError(
            f"linear_probe: the training labels hold {classes.size} class(es) "
            f"({classes.tolist()}); a probe needs at least 2."
        )
    unseen = np.setdiff1d(np.unique(y_test), classes)
    if unseen.size:
        raise DataError(
            f"linear_probe: test labels {unseen.tolist()} never occur in the training labels; "
            "train and test must come from the same label space (check the splits or subset)."
        )
    return classes, np.searchsorted(classes, y_train), np.searchsorted(classes, y_test)


def _normalize(X: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32), device=device)
    return torch.nn.functional.normalize(t, dim=1)


def _predict(X: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.addmm(b, X, W)


def _accuracy(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> float:
    return float((_predict(X, W, b).argmax(dim=1) == y).float().mean())


def linear_probe(
    X_train: npt.ArrayLike,
    y_train: npt.ArrayLike,
    X_test: npt.ArrayLike,
    y_test: npt.ArrayLike,
    *,
    protocol: str = "fast",
    seed: int = 0,
    val_proportion: float = 0.2,
    **options: Any,
) -> dict[str, Any]:
    """Return test metrics of a linear probe whose hyper-parameters are chosen on validation.

    See the module docstring for the two protocols and the search.

    Args:
        X_train: training features, (n, d), one row per sample.
        y_train: training labels, (n,) integers.
        X_test: test features, (m, d).
        y_test: test labels, (m,); every test class must occur in ``y_train``.
        protocol: ``"fast"`` (exact L-BFGS logistic regression) or ``"rep2rep"``.
        seed: run seed: validation split, probe initialisation and shuffling.
        val_proportion: stratified fraction of the training rows held out for the search, in
            [0, 1); 0 searches nothing (fixed ``reg_lambda`` and a single learning rate).
        **options: keyword options of :func:`linear_probe_blocks`:

            fewshot_k: train on ``k`` rows per class drawn (``fewshot_seed``) from the rows outside
                the validation split; the refit uses those ``k`` rows only.
            fewshot_seed: seed of the few-shot draw.
            device: ``"cpu"``, ``"cuda"``, ``"auto"``, or a torch device.
            weight_decays: the grid (default :data:`WEIGHT_DECAY_GRID`, ascending).
            lrs: learning rates for ``rep2rep`` (default :data:`REP2REP_LRS`).
            epochs: ``rep2rep`` epochs.
            batch_size: ``rep2rep`` batch size.
            max_iter: ``fast`` L-BFGS iteration cap per fit.
            tol: ``fast`` gradient tolerance of the final (float64) fit.
            search_tol: ``fast`` gradient tolerance of the (float32) fits scored on validation
                during the search: they only rank weight decays, so they stop earlier.
            search: ``"simc"`` or ``"rep2rep"`` (:data:`SEARCH_RULES`, module docstring).
            regularization: ``rep2rep``: ``"weight_decay"``, ``"L1"`` or ``"L2"``.
            reg_lambda: the fixed λ when ``val_proportion`` is 0 (required then).

    Returns:
        A dict with ``top1``, ``top5``, ``balanced_acc``, ``per_class_recall``,
        ``weight_decay``, ``lr`` (``None`` for ``fast``), ``val_curve`` (list of
        ``{lr, weight_decay, val_top1}``), ``val_top1``, ``protocol``, ``seed``, ``classes``,
        ``n_classes``, ``n_train`` (rows of the final fit), ``n_val``, ``n_test``,
        ``estimator`` (the solver and its settings, in words),
        ``fit_seconds``, ``sklearn_C`` (``fast``: the equivalent scikit-learn ``C`` of the
        final fit), the probe ``weights`` (d, C) and ``bias`` (C,) acting on L2-normalised
        rows, the ``test_scores`` (m, C), and the row indices into ``X_train`` ``train_indices`` (final fit),
        ``search_indices`` (fits during the search) and ``val_indices``.

    Raises:
        ConfigError: unknown protocol or bad option.
        DataError: shapes disagree, NaN/inf features, fewer than 2 training classes, a test
            class absent from training, or too few rows for ``fewshot_k``.
    """
    results = linear_probe_blocks(
        {"features": X_train},
        y_train,
        {"features": X_test},
        y_test,
        protocol=protocol,
        seed=seed,
        val_proportion=val_proportion,
        **options,
    )
    return results["features"]


def linear_probe_blocks(
    blocks_train: Mapping[str, npt.ArrayLike],
    y_train: npt.ArrayLike,
    blocks_test: Mapping[str, npt.ArrayLike],
    y_test: npt.ArrayLike,
    *,
    protocol: str = "fast",
    seed: int = 0,
    val_proportion: float = 0.2,
    fewshot_k: int | None = None,
    fewshot_seed: int = 0,
    device: str | torch.device = "cpu",
    weight_decays: npt.ArrayLike | None = None,
    lrs: Sequence[float] | None = None,
    epochs: int = 20,
    batch_size: int = 1024,
    max_iter: int = 1000,
    tol: float = 1e-6,
    search_tol: float = 1e-4,
    search: str = "simc",
    regularization: str = "weight_decay",
    reg_lambda: float | None = None,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Return :func:`linear_probe`'s result for every block, sharing labels and splits.

    One call probes all blocks of a model (accuracy vs depth): labels are checked, the
    validation split and few-shot sample drawn once, and each block's features are used as
    given (no reload).

    Args:
        blocks_train: ``{block: (n, d_block)}`` training features, in depth order.
        y_train: (n,) labels.
        blocks_test: ``{block: (m, d_block)}`` test features with the same block names.
        y_test: (m,) labels.
        protocol, seed, val_proportion, fewshot_k, fewshot_seed, device, weight_decays, lrs,
            epochs, batch_size, max_iter, tol, search_tol, search, regularization, reg_lambda:
            as in :func:`linear_probe`.
        progress: show a progress bar over blocks.

    Returns:
        ``{block: result}`` in the order of ``blocks_train``.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"linear_probe: unknown protocol {protocol!r}. Choose one of {', '.join(PROTOCOLS)}."
        )
    if set(blocks_train) != set(blocks_test):
        raise DataError(
            f"linear_probe: train blocks {sorted(blocks_train)} differ from test blocks "
            f"{sorted(blocks_test)}."
        )
    lr_list = tuple(REP2REP_LRS if lrs is None else lrs)
    fixed = _check_search_options(
        protocol, val_proportion, search, regularization, reg_lambda, lr_list
    )
    y_train = np.asarray(y_train)
    y_test = np.asarray(y_test)
    classes, yi_train, yi_test = _prepare_labels(y_train, y_test)
    if fixed is None:
        fit_rows, val_rows = validation_split(
            yi_train, val_proportion=val_proportion, seed=seed, rule=search
        )
    else:
        fit_rows = np.arange(y_train.size, dtype=np.int64)
        val_rows = np.zeros(0, dtype=np.int64)
    if fewshot_k is not None:
        search_rows = fewshot_indices(yi_train, fewshot_k, seed=fewshot_seed, candidates=fit_rows)
        final_rows = search_rows
    else:
        search_rows, final_rows = fit_rows, np.arange(y_train.size, dtype=np.int64)
    grid = WEIGHT_DECAY_GRID if weight_decays is None else np.asarray(weight_decays, float)
    if grid.ndim != 1 or grid.size < 1 or (grid <= 0).any() or (np.diff(grid) <= 0).any():
        raise ConfigError("linear_probe: weight_decays must be a 1-D ascending positive grid.")
    dev = resolve_device(device)
    out: dict[str, dict[str, Any]] = {}
    bar = progress_bar(blocks_train.items(), desc=f"probe ({protocol})", unit="block",
               disable=not progress or len(blocks_train) < 2)  # fmt: skip
    for name, X_tr in bar:
        X_tr = np.asarray(X_tr)
        X_te = np.asarray(blocks_test[name])
        _check_features(f"train block {name!r}", X_tr, y_train.size)
        _check_features(f"test block {name!r}", X_te, y_test.size)
        if X_tr.shape[1] != X_te.shape[1]:
            raise DataError(
                f"linear_probe: block {name!r} has {X_tr.shape[1]} train dims but "
                f"{X_te.shape[1]} test dims."
            )
        start = time.perf_counter()
        Xt = _normalize(X_tr, dev)
        yt = torch.as_tensor(yi_train, device=dev)
        result = _probe_one(
            Xt,
            yt,
            classes.size,
            torch.as_tensor(search_rows, device=dev),
            torch.as_tensor(val_rows, device=dev),
            torch.as_tensor(final_rows, device=dev),
            protocol=protocol,
            grid=grid,
            lrs=lr_list,
            seed=seed,
            epochs=epochs,
            batch_size=batch_size,
            max_iter=max_iter,
            tol=tol,
            search_tol=search_tol,
            search=search,
            regularization=regularization,
            fixed=fixed,
        )
        W, b = result.pop("_params")
        scores = _predict(_normalize(X_te, dev).to(W.dtype), W, b).cpu().numpy()
        metrics = classification_metrics(scores, yi_test, classes=classes.tolist())
        out[name] = {
            **metrics,
            **result,
            "protocol": protocol,
            "search": search if fixed is None else None,
            "regularization": regularization,
            "seed": seed,
            "classes": jsonable(list(classes)),
            "n_classes": int(classes.size),
            "n_train": int(final_rows.size),
            "n_val": int(val_rows.size),
            "n_test": int(y_test.size),
            "fewshot_k": fewshot_k,
            "fit_seconds": time.perf_counter() - start,
            "test_predictions": classes[scores.argmax(axis=1)],
            "train_indices": final_rows,
            "search_indices": search_rows,
            "val_indices": val_rows,
            # The fitted probe (scores = normalize(X) @ weights + bias) and its test scores,
            # stored by sim_consistency.probe.stored; never written into results.json.
            "weights": W.detach().cpu().numpy(),
            "bias": b.detach().cpu().numpy(),
            "test_scores": scores,
        }
    return out


def _probe_one(
    X: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    search_rows: torch.Tensor,
    val_rows: torch.Tensor,
    final_rows: torch.Tensor,
    *,
    protocol: str,
    grid: np.ndarray,
    lrs: tuple[float, ...],
    seed: int,
    epochs: int,
    batch_size: int,
    max_iter: int,
    tol: float,
    search_tol: float,
    search: str,
    regularization: str,
    fixed: tuple[float, float] | None,
) -> dict[str, Any]:
    X_fit, y_fit = X[search_rows], y[search_rows]
    X_val, y_val = X[val_rows], y[val_rows]
    curve: list[dict[str, Any]] = []
    if protocol == "fast":
        solutions: dict[int, LogRegFit] = {}
        # One spectrum (preconditioner) per training split, shared by every fit of the path
        # and by the refit; one rotation (X − μ) U of the search rows, shared by the path.
        spectrum = feature_spectrum(X_fit)
        rotated = rotate_features(X_fit, spectrum)

        if fixed is not None:
            wd = fixed[1]
            W, b, *_ = fit_logreg(
                X[final_rows].double(), y[final_rows], n_classes, l2=wd, max_iter=max_iter,
                tol=tol,
            )  # fmt: skip
            return {
                "estimator": _fast_estimator(search_tol, tol),
                "weight_decay": wd,
                "lr": None,
                "val_top1": None,
                "val_curve": [],
                "sklearn_C": sklearn_C(wd, int(final_rows.numel())),
                "_params": (W, b),
            }

        def evaluate(i: int) -> float:
            init = None
            if solutions:
                init = solutions[min(solutions, key=lambda j: (abs(j - i), -j))]
            fit = fit_logreg(
                X_fit, y_fit, n_classes, l2=float(grid[i]), init=init, spectrum=spectrum,
                rotated=rotated, max_iter=max_iter, tol=search_tol,
            )  # fmt: skip
            solutions[i] = fit
            return _accuracy(X_val, y_val, fit.W, fit.b) if val_rows.numel() else 0.0

        best, scores = coarse_to_fine_search(evaluate, grid.size, rule=search)
        curve = [
            {"lr": None, "weight_decay": float(grid[i]), "val_top1": s}
            for i, s in sorted(scores.items())
        ]
        wd = float(grid[best])
        # The refit runs in float64: at weak penalties (near-separable rows) float32 cannot
        # resolve the optimum (digits: 0.8 pp off scikit-learn), and at strong penalties the
        # class scores differ by ~1e-5 so float32 rounding flips argmaxes.
        W, b, *_ = fit_logreg(
            X[final_rows].double(), y[final_rows], n_classes, l2=wd, init=solutions[best],
            spectrum=spectrum, max_iter=max_iter, tol=tol,
        )  # fmt: skip
        return {
            "estimator": _fast_estimator(search_tol, tol),
            "weight_decay": wd,
            "lr": None,
            "val_top1": scores[best],
            "val_curve": curve,
            "sklearn_C": sklearn_C(wd, int(final_rows.numel())),
            "_params": (W, b),
        }

    trainer: dict[str, Any] = {
        "epochs": epochs, "batch_size": batch_size, "seed": seed,
        "regularization": regularization, "rng": search,
    }  # fmt: skip
    if fixed is not None:
        lr, wd = fixed
        val_top1: float | None = None
    else:
        best_key: tuple[float, int, float] | None = None
        for position, lr in enumerate(lrs):

            def evaluate_at_lr(i: int, lr: float = lr) -> float:
                W, b = fit_rep2rep(X_fit, y_fit, n_classes, lr=lr, weight_decay=float(grid[i]),
                                   **trainer)  # fmt: skip
                return _accuracy(X_val, y_val, W, b) if val_rows.numel() else 0.0

            best, scores = coarse_to_fine_search(evaluate_at_lr, grid.size, rule=search)
            curve.extend(
                {"lr": lr, "weight_decay": float(grid[i]), "val_top1": s}
                for i, s in sorted(scores.items())
            )
            # simc: ties to the larger decay, then the larger lr; rep2rep
            # (HyperparameterTuner.tune: `if max_acc < acc1`): the earlier lr keeps a tie.
            key = (scores[best], best, lr) if search == "simc" else (scores[best], -position, lr)
            if best_key is None or key > best_key:
                best_key = key
                best_index = best
        assert best_key is not None
        val_top1, lr = best_key[0], best_key[2]
        wd = float(grid[best_index])
    W, b = fit_rep2rep(X[final_rows], y[final_rows], n_classes, lr=lr, weight_decay=wd, **trainer)
    penalty = {"weight_decay": "AdamW(lr, weight_decay)", "L1": "AdamW(lr) + weight_decay*sum|W|",
               "L2": "AdamW(lr) + weight_decay*sum W^2"}[regularization]  # fmt: skip
    return {
        "estimator": (
            f"nn.Linear, {penalty}, per-step cosine schedule, batch {batch_size}, "
            f"{epochs} epochs, cross-entropy; L2-normalised rows"
            + ("; Rep2Rep's random stream" if search == "rep2rep" else "")
        ),
        "weight_decay": wd,
        "lr": lr,
        "val_top1": val_top1,
        "val_curve": curve,
        "sklearn_C": None,
        "_params": (W, b),
    }


def _fast_estimator(search_tol: float, tol: float) -> str:
    return (
        "multinomial logistic regression, L2 penalty weight_decay on W (sklearn "
        "C=1/(n*weight_decay)), full-batch L-BFGS (torch, strong Wolfe) in the centred whitened "
        f"eigenbasis; search float32 tol {search_tol:g}, refit float64 tol {tol:g}; "
        "L2-normalised rows"
    )


def _check_search_options(
    protocol: str,
    val_proportion: float,
    search: str,
    regularization: str,
    reg_lambda: float | None,
    lrs: tuple[float, ...],
) -> tuple[float, float] | None:
    """Validate the search options; return the fixed ``(lr, λ)`` when nothing is searched."""
    if search not in SEARCH_RULES:
        raise ConfigError(
            f"linear_probe: unknown search rule {search!r}. Choose one of {', '.join(SEARCH_RULES)}."
        )
    if regularization not in REGULARIZATIONS:
        raise ConfigError(
            f"linear_probe: unknown regularization {regularization!r}. Choose one of "
            f"{', '.join(REGULARIZATIONS)}."
        )
    if protocol == "fast" and regularization != "weight_decay":
        raise ConfigError(
            f"linear_probe: regularization {regularization!r} needs the rep2rep protocol (the "
            "fast protocol's weight_decay is already an L2 penalty on W)."
        )
    if not lrs or any(not np.isfinite(lr) or lr <= 0 for lr in lrs):
        raise ConfigError(f"linear_probe: learning rates must be positive numbers (got {lrs}).")
    if not 0.0 <= val_proportion < 1.0:
        raise ConfigError(f"linear_probe: val_proportion must be in [0, 1) (got {val_proportion}).")
    if val_proportion > 0:
        return None
    if reg_lambda is None or not np.isfinite(reg_lambda) or reg_lambda < 0:
        raise ConfigError(
            f"linear_probe: val_proportion 0 trains once with a fixed reg_lambda >= 0 (got "
            f"{reg_lambda!r})."
        )
    if protocol == "fast" and reg_lambda == 0:
        raise ConfigError("linear_probe: the fast protocol needs reg_lambda > 0 (got 0).")
    if protocol == "rep2rep" and len(lrs) != 1:
        raise ConfigError(
            f"linear_probe: val_proportion 0 trains once: give exactly one learning rate (got "
            f"{list(lrs)})."
        )
    return (lrs[0] if protocol == "rep2rep" else float("nan")), float(reg_lambda)
