"""Linear probes: protocols, search, splits, few-shot, metrics and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from sim_consistency.errors import ConfigError, DataError, NonFiniteError
from sim_consistency.features import open_cache
from sim_consistency.probe import (
    REP2REP_LRS,
    WEIGHT_DECAY_GRID,
    classification_metrics,
    coarse_to_fine_search,
    feature_spectrum,
    fewshot_indices,
    fit_logreg,
    fit_rep2rep,
    head_accuracy,
    linear_probe,
    linear_probe_blocks,
    sklearn_C,
    validation_split,
)
from sim_consistency.probe.solvers import rotate_features


def _features(location, model_id, block=None):
    """Return ``(X_train, y_train, X_test, y_test)`` of one cached block (default: last)."""
    with (
        open_cache(location.feature_file("wds/digits", "train", model_id)) as train,
        open_cache(location.feature_file("wds/digits", "test", model_id)) as test,
    ):
        name = block or train.block_names[-1]
        return train.block(name), train.labels, test.block(name), test.labels


def _normalized(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _blobs(n=600, d=32, n_classes=6, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_classes, d))
    y = np.arange(n) % n_classes
    X = means[y] + spread * rng.normal(size=(n, d))
    return X.astype(np.float32), y


# -- agreement with scikit-learn and with the Rep2Rep protocol ---------------------------------


@pytest.mark.parametrize("model_id", ["vit", "rn"])
@pytest.mark.parametrize("l2", [1e-2, 1e-4, 1e-6])
@pytest.mark.slow
def test_fast_solver_matches_sklearn_at_same_C(probe_project, model_id, l2):
    location, _ = probe_project
    X_tr, y_tr, X_te, y_te = _features(location, model_id)
    X_tr, X_te = _normalized(X_tr.astype(np.float64)), _normalized(X_te.astype(np.float64))
    W, b, *_ = fit_logreg(torch.from_numpy(X_tr), torch.from_numpy(y_tr), 10, l2=l2)
    ours = float(np.mean((X_te @ W.numpy() + b.numpy()).argmax(1) == y_te))
    C = sklearn_C(l2, len(y_tr))
    sk = LogisticRegression(C=C, max_iter=10_000, tol=1e-8).fit(X_tr, y_tr)
    assert abs(ours - sk.score(X_te, y_te)) <= 0.003


def test_fast_solver_recovers_the_uncentred_intercept():
    """The solver centres the rows internally; W and b come back for the raw rows (sklearn's)."""
    X, y = _blobs(n=400, d=12, n_classes=4, spread=2.0)
    X = X.astype(np.float64) + 6.0  # a large common offset: mean direction ≫ class structure
    l2 = 1e-3
    W, b, *_ = fit_logreg(torch.from_numpy(X), torch.from_numpy(y), 4, l2=l2, tol=1e-9)
    sk = LogisticRegression(C=sklearn_C(l2, len(y)), max_iter=10_000, tol=1e-10).fit(X, y)
    ours = torch.softmax(torch.from_numpy(X) @ W + b, dim=1).numpy()
    np.testing.assert_allclose(ours, sk.predict_proba(X), atol=1e-5)
    # Same minimiser up to the softmax's shift invariance (sklearn's W has zero-sum columns too).
    np.testing.assert_allclose(W.numpy(), sk.coef_.T, atol=1e-4)


def test_float32_fit_at_an_unreachable_tolerance_stops_when_the_loss_is_flat():
    """tol=0 cannot be met in float32: the fit stops once the loss change stays within rounding
    (not after max_iter), at the float64 solution's predictions."""
    X, y = _blobs(n=2000, d=64, n_classes=20, spread=4.0)
    X, y = torch.nn.functional.normalize(torch.from_numpy(X), dim=1), torch.from_numpy(y)
    W, b, *_ = fit_logreg(X, y, 20, l2=1e-4, tol=1e-4)
    W32, b32, n_evals, *_ = fit_logreg(X, y, 20, l2=1e-4, init=(W, b), tol=0.0, max_iter=1000)
    W64, b64, *_ = fit_logreg(X.double(), y, 20, l2=1e-4, tol=1e-8)
    assert n_evals <= 40
    agree = (X @ W32 + b32).argmax(1) == (X.double() @ W64 + b64).argmax(1)
    assert agree.float().mean() >= 0.999


def test_warm_start_and_shared_rotation_give_the_same_minimiser():
    """A path fit warm-started from a neighbouring λ on shared rotated rows lands where a cold
    fit on its own rotation lands (to the float64 loss's resolution: ~1e-7 relative in W)."""
    X, y = _blobs(n=1500, d=48, n_classes=12, spread=3.0)
    X64 = torch.nn.functional.normalize(torch.from_numpy(X).double(), dim=1)
    y = torch.from_numpy(y)
    spectrum = feature_spectrum(X64)
    rotated = rotate_features(X64, spectrum)
    strong = fit_logreg(X64, y, 12, l2=1e-2, spectrum=spectrum, rotated=rotated, tol=1e-10)
    kw = dict(l2=1e-4, spectrum=spectrum, tol=1e-10)
    warm = fit_logreg(X64, y, 12, init=strong, rotated=rotated, **kw)
    cold = fit_logreg(X64, y, 12, **kw)
    np.testing.assert_allclose(warm.W, cold.W, atol=1e-6)
    np.testing.assert_allclose(warm.b, cold.b, atol=1e-6)


@pytest.mark.parametrize("model_id", ["vit", "rn"])
@pytest.mark.slow
def test_fast_search_curve_is_the_exact_validation_curve(probe_project, model_id):
    """The float32 search fits (tol 1e-4) score validation like exact fits (float64, tol 1e-9):
    within one validation row at every grid point scored, and the same chosen weight decay."""
    location, _ = probe_project
    X_tr, y_tr, X_te, y_te = _features(location, model_id)
    result = linear_probe(X_tr, y_tr, X_te, y_te)
    fit_rows, val_rows = result["search_indices"], result["val_indices"]
    X = torch.nn.functional.normalize(torch.from_numpy(X_tr).double(), dim=1)
    y = torch.from_numpy(np.searchsorted(np.unique(y_tr), y_tr))
    exact, init = {}, None
    for point in sorted(result["val_curve"], key=lambda p: -p["weight_decay"]):
        wd = point["weight_decay"]
        init = fit_logreg(X[fit_rows], y[fit_rows], 10, l2=wd, init=init, tol=1e-9)
        scores = X[val_rows] @ init.W + init.b
        exact[wd] = float((scores.argmax(1) == y[val_rows]).double().mean())
        assert abs(point["val_top1"] - exact[wd]) * len(val_rows) <= 1 + 1e-9, wd
    assert result["weight_decay"] == max(exact, key=lambda wd: (exact[wd], wd))


@pytest.mark.slow
def test_fast_protocol_refit_matches_sklearn(probe_project):
    """End to end: the probe's final fit equals sklearn's at the reported C (one-point grid)."""
    location, _ = probe_project
    X_tr, y_tr, X_te, y_te = _features(location, "vit")
    result = linear_probe(X_tr, y_tr, X_te, y_te, weight_decays=[1e-4])
    sk = LogisticRegression(C=result["sklearn_C"], max_iter=10_000, tol=1e-8)
    sk.fit(_normalized(X_tr.astype(np.float64)), y_tr)
    assert abs(result["top1"] - sk.score(_normalized(X_te.astype(np.float64)), y_te)) <= 0.003


@pytest.mark.parametrize("model_id", ["vit", "rn"])
@pytest.mark.slow
def test_fast_reaches_rep2rep_accuracy_on_real_features(probe_project, model_id):
    """Fast >= rep2rep - 0.5 pp (a reduced rep2rep sweep: every 3rd grid point, 2 lrs)."""
    location, _ = probe_project
    X_tr, y_tr, X_te, y_te = _features(location, model_id)
    grid = WEIGHT_DECAY_GRID[::3]
    fast = linear_probe(X_tr, y_tr, X_te, y_te, protocol="fast", weight_decays=grid)
    slow = linear_probe(
        X_tr, y_tr, X_te, y_te, protocol="rep2rep", weight_decays=grid, lrs=(1e-1, 1e-2),
        batch_size=64, epochs=10,
    )  # fmt: skip
    assert fast["top1"] >= slow["top1"] - 0.005
    assert slow["lr"] in (1e-1, 1e-2) and fast["lr"] is None


@pytest.mark.slow
def test_full_rep2rep_protocol_on_real_features_and_fast_reaches_it(probe_project):
    """The real protocol (4 lrs, 64-point grid, 20 epochs, batch 1024) on 240 digits rows."""
    location, _ = probe_project
    X_tr, y_tr, X_te, y_te = _features(location, "vit")
    slow = linear_probe(X_tr, y_tr, X_te, y_te, protocol="rep2rep", seed=1)
    fast = linear_probe(X_tr, y_tr, X_te, y_te, protocol="fast", seed=1)
    assert fast["top1"] >= slow["top1"] - 0.005
    assert {p["lr"] for p in slow["val_curve"]} == set(REP2REP_LRS)
    assert all(p["weight_decay"] in WEIGHT_DECAY_GRID for p in slow["val_curve"])
    assert len(slow["val_curve"]) <= 16 * len(REP2REP_LRS)
    best = max(slow["val_curve"], key=lambda p: (p["val_top1"], p["weight_decay"], p["lr"]))
    assert (slow["lr"], slow["weight_decay"]) == (best["lr"], best["weight_decay"])
    assert slow["n_train"] == len(y_tr)  # refit on the full train split
    assert slow["seed"] == 1 and np.array_equal(
        slow["val_indices"], validation_split(np.searchsorted(np.unique(y_tr), y_tr), seed=1)[1]
    )


@pytest.mark.slow
def test_rep2rep_trainer_is_seeded():
    X, y = _blobs(n=200)
    X, y = torch.nn.functional.normalize(torch.from_numpy(X), dim=1), torch.from_numpy(y)
    a = fit_rep2rep(X, y, 6, lr=1e-2, weight_decay=1e-4, epochs=3, batch_size=64, seed=0)
    b = fit_rep2rep(X, y, 6, lr=1e-2, weight_decay=1e-4, epochs=3, batch_size=64, seed=0)
    c = fit_rep2rep(X, y, 6, lr=1e-2, weight_decay=1e-4, epochs=3, batch_size=64, seed=1)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    assert a[0].shape == (32, 6) and a[1].shape == (6,)


@pytest.mark.slow
def test_fast_and_rep2rep_agree_on_well_conditioned_features():
    X_tr, y_tr = _blobs(seed=0, spread=2.0)
    X_te, y_te = _blobs(n=1200, seed=0, spread=2.0)
    X_te = X_te + np.random.default_rng(1).normal(size=X_te.shape).astype(np.float32)
    grid = WEIGHT_DECAY_GRID[::4]
    fast = linear_probe(X_tr, y_tr, X_te, y_te, weight_decays=grid)
    slow = linear_probe(
        X_tr, y_tr, X_te, y_te, protocol="rep2rep", weight_decays=grid, lrs=(1e-1,),
        batch_size=64, epochs=20,
    )  # fmt: skip
    assert fast["top1"] >= slow["top1"] - 0.005


# -- search and splits -------------------------------------------------------------------------


def test_search_finds_peak_of_unimodal_curve_with_few_evaluations():
    for peak in (0, 5, 17, 40, 63):
        best, scores = coarse_to_fine_search(lambda i, p=peak: -abs(i - p), 64)
        assert best == peak
        assert len(scores) <= 16


def test_search_ties_go_to_larger_decay():
    best, _ = coarse_to_fine_search(lambda i: 1.0, 64)
    assert best == 63
    best, _ = coarse_to_fine_search(lambda i: 1.0 if i <= 30 else 0.0, 64)
    assert best == 30


def test_validation_split_is_stratified_disjoint_and_seeded():
    y = np.repeat(np.arange(5), [10, 20, 30, 1, 2])
    fit, val = validation_split(y, val_proportion=0.2, seed=3)
    assert np.intersect1d(fit, val).size == 0
    assert np.array_equal(np.union1d(fit, val), np.arange(y.size))
    assert [int((y[val] == c).sum()) for c in range(5)] == [2, 4, 6, 0, 0]
    assert [int((y[fit] == c).sum()) for c in range(5)] == [8, 16, 24, 1, 2]
    fit2, val2 = validation_split(y, val_proportion=0.2, seed=3)
    assert np.array_equal(val, val2)
    assert not np.array_equal(val, validation_split(y, val_proportion=0.2, seed=4)[1])


def test_fewshot_draw_is_k_per_class_and_seeded():
    y = np.repeat(np.arange(4), 10)
    rows = fewshot_indices(y, 3, seed=1)
    assert np.bincount(y[rows]).tolist() == [3, 3, 3, 3]
    assert np.array_equal(rows, fewshot_indices(y, 3, seed=1))
    with pytest.raises(DataError, match="fewer than k=11"):
        fewshot_indices(y, 11)
    with pytest.raises(ConfigError):
        fewshot_indices(y, 0)


def test_fewshot_never_trains_on_validation_rows():
    X_tr, y_tr = _blobs(n=300, seed=0)
    X_te, y_te = _blobs(n=120, seed=1)
    kw = dict(fewshot_k=5, fewshot_seed=7, weight_decays=[1e-3], seed=2)
    result = linear_probe(X_tr, y_tr, X_te, y_te, **kw)
    train, val = result["train_indices"], result["val_indices"]
    assert np.intersect1d(train, val).size == 0
    assert np.bincount(y_tr[train]).tolist() == [5] * 6
    assert result["n_train"] == 30
    # The final probe depends on the k-shot rows only: scrambling every other row (validation
    # rows included) leaves the test predictions unchanged when the grid has one point.
    others = np.setdiff1d(np.arange(len(y_tr)), train)
    scrambled = X_tr.copy()
    scrambled[others] = np.random.default_rng(0).normal(size=(others.size, X_tr.shape[1]))
    again = linear_probe(scrambled, y_tr, X_te, y_te, **kw)
    assert np.array_equal(again["train_indices"], train)
    assert again["top1"] == result["top1"]
    assert again["per_class_recall"] == result["per_class_recall"]


# -- blocks, metrics, head accuracy ------------------------------------------------------------


@pytest.mark.slow
def test_probe_blocks_equals_per_block_probe(probe_project):
    location, _ = probe_project
    with (
        open_cache(location.feature_file("wds/digits", "train", "rn")) as train,
        open_cache(location.feature_file("wds/digits", "test", "rn")) as test,
    ):
        blocks_tr = {name: train.block(name) for name in train.block_names}
        blocks_te = {name: test.block(name) for name in train.block_names}
        y_tr, y_te = train.labels, test.labels
    grid = WEIGHT_DECAY_GRID[::8]
    together = linear_probe_blocks(blocks_tr, y_tr, blocks_te, y_te, weight_decays=grid)
    assert list(together) == list(blocks_tr)
    name = list(blocks_tr)[1]
    alone = linear_probe(blocks_tr[name], y_tr, blocks_te[name], y_te, weight_decays=grid)
    assert alone["top1"] == together[name]["top1"]
    assert alone["weight_decay"] == together[name]["weight_decay"]
    for result in together.values():
        assert 0.0 <= result["top1"] <= 1.0
        assert {"top1", "top5", "balanced_acc", "per_class_recall", "weight_decay", "lr"} <= set(
            result
        )
        assert len(result["val_curve"]) >= 1


def test_classification_metrics_by_hand():
    scores = np.array([[3, 2, 1], [1, 3, 2], [1, 3, 2], [3, 1, 2]], dtype=float)
    y = np.array([0, 1, 2, 2])
    m = classification_metrics(scores, y, classes=[10, 20, 30])
    assert m["top1"] == 0.5
    assert math.isnan(m["top5"])  # fewer than 5 classes
    assert m["per_class_recall"] == {10: 1.0, 20: 1.0, 30: 0.0}
    assert m["balanced_acc"] == pytest.approx(2 / 3)
    scores5 = np.eye(6)[[1, 2, 3, 4, 5, 0]]  # every prediction wrong, true class ranks 2nd
    m5 = classification_metrics(scores5 + 0.1 * np.eye(6), np.arange(6))
    assert m5["top1"] == 0.0 and m5["top5"] == 1.0


def test_head_accuracy_with_class_mask():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 20)).astype(np.float32)
    mask = [3, 7, 11, 19]
    labels = logits[:, mask].argmax(1)  # the projected head is always right
    assert head_accuracy(logits, labels, class_mask=mask)["top1"] == 1.0
    assert head_accuracy(logits, labels, class_mask=mask)["n_classes"] == 4
    with pytest.raises(DataError, match="class_mask"):
        head_accuracy(logits, labels, class_mask=[0, 25])
    with pytest.raises(DataError, match="labels range"):
        head_accuracy(logits[:, :2], labels)


# -- errors ------------------------------------------------------------------------------------


def test_errors_name_the_problem():
    X, y = _blobs(n=60)
    with pytest.raises(DataError, match="at least 2"):
        linear_probe(X, np.zeros_like(y), X, np.zeros_like(y))
    with pytest.raises(DataError, match=r"test labels \[9\] never occur"):
        linear_probe(X, y, X[:3], np.array([0, 1, 9]))
    bad = X.copy()
    bad[4, 0] = np.nan
    with pytest.raises(NonFiniteError, match=r"NaN/inf values in 1 row\(s\), the first at row 4"):
        linear_probe(bad, y, X, y)
    with pytest.raises(DataError, match="rows but"):
        linear_probe(X, y[:-1], X, y)
    with pytest.raises(ConfigError, match="unknown protocol 'sgd'"):
        linear_probe(X, y, X, y, protocol="sgd")
