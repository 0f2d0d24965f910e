"""CKA (similarity/cka.py) against a straightforward ``np.longdouble`` evaluation of the
estimators, from wide bandwidths down to σ = 0.05 × the median distance and beyond."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from sim_consistency.similarity import (
    BandwidthTooSmallWarning,
    DegenerateRepresentationWarning,
    cka,
    rbf_cka_from_stats,
    rbf_stats,
)

LD = np.longdouble
FRACTIONS = [1.0, 0.5, 0.2, 0.15, 0.1, 0.05]
SHAPES = [(50, 10), (50, 200), (500, 40), (300, 600)]  # d < n and d > n, n from 50 to 500


def _sq_distances_ld(Z: np.ndarray) -> np.ndarray:
    """All n^2 squared distances in extended precision, from explicit differences."""
    Z = Z.astype(LD)
    return np.stack([((z - Z) ** 2).sum(axis=1) for z in Z])


def _hsic_ld(K: np.ndarray, L: np.ndarray, unbiased: bool) -> LD:
    """``n(n-3) HSIC_u`` (Song et al. 2012, eq. 5, diagonals zeroed) or ``tr(KHLH)``."""
    n = K.shape[0]
    if unbiased:
        K, L = K.copy(), L.copy()
        np.fill_diagonal(K, 0)
        np.fill_diagonal(L, 0)
        rk, rl = K.sum(axis=1), L.sum(axis=1)
        return (
            (K * L).sum() + rk.sum() * rl.sum() / LD((n - 1) * (n - 2)) - 2 * (rk @ rl) / LD(n - 2)
        )
    Kc = K - K.mean(axis=0) - K.mean(axis=1)[:, None] + K.mean()  # HKH
    return (Kc * L).sum()


def _cka_ld(K: np.ndarray, L: np.ndarray, unbiased: bool) -> float:
    return float(
        _hsic_ld(K, L, unbiased) / np.sqrt(_hsic_ld(K, K, unbiased) * _hsic_ld(L, L, unbiased))
    )


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: f"n{s[0]}_d{s[1]}")
def features(request):
    """X and a noisy nonlinear map Y of it, with their extended-precision squared distances."""
    n, d = request.param
    rng = np.random.default_rng(n + d)
    X = rng.normal(size=(n, d))
    Y = np.tanh(X @ rng.normal(size=(d, d)) / np.sqrt(d)) + 0.5 * rng.normal(size=(n, d))
    return X, Y, _sq_distances_ld(X), _sq_distances_ld(Y)


@pytest.mark.parametrize("unbiased", [False, True], ids=["biased", "unbiased"])
def test_rbf_matches_longdouble_reference_at_every_bandwidth(features, unbiased):
    """Error ≤ 1e-9 for σ from 1.0 to 0.05 × the median distance (the old slab sums, which
    added the unit diagonal and subtracted it again, were off by up to 0.9 or NaN)."""
    X, Y, DX, DY = features
    errors = {}
    for f in FRACTIONS:
        sx2, sy2 = LD(f) ** 2 * np.median(DX), LD(f) ** 2 * np.median(DY)
        expected = _cka_ld(np.exp(-DX / (2 * sx2)), np.exp(-DY / (2 * sy2)), unbiased)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no degenerate / bandwidth warning down to 0.05
            direct = cka(X, Y, kernel="rbf", sigma_median=f, unbiased=unbiased)
            streamed = cka(X, Y, kernel="rbf", sigma_median=f, unbiased=unbiased, chunk_rows=37)
            absolute = rbf_cka_from_stats(
                rbf_stats(X, sigma=float(np.sqrt(sx2)), slab_rows=64),
                rbf_stats(Y, sigma=float(np.sqrt(sy2)), slab_rows=64),
                unbiased=unbiased,
            )
        errors[f] = max(abs(v - expected) for v in (direct, streamed, absolute))
    assert max(errors.values()) <= 1e-9, errors


@pytest.mark.parametrize("unbiased", [False, True], ids=["biased", "unbiased"])
def test_rbf_exact_where_kernel_products_underflow(unbiased):
    """Largest off-diagonal kernel entry ≈ 1e-200: every product K_ij L_ij underflows in
    float64, yet the estimator is exact (the kernel is kept scaled by its largest entry)."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 5))
    Y = X + 0.3 * rng.normal(size=(60, 5))
    DX, DY = _sq_distances_ld(X), _sq_distances_ld(Y)

    def sigma_for(D):  # exp(-m / (2σ^2)) = 1e-200 for the smallest distance m
        m = D[~np.eye(len(D), dtype=bool)].min()
        return np.sqrt(m / (2 * 200 * np.log(LD(10))))

    sx, sy = sigma_for(DX), sigma_for(DY)
    expected = _cka_ld(np.exp(-DX / (2 * sx**2)), np.exp(-DY / (2 * sy**2)), unbiased)
    stats_x, stats_y = rbf_stats(X, sigma=float(sx)), rbf_stats(Y, sigma=float(sy))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = rbf_cka_from_stats(stats_x, stats_y, unbiased=unbiased)
    assert np.isfinite(got) and got == pytest.approx(expected, abs=1e-9)


def test_rbf_kernel_underflow_is_nan_with_a_bandwidth_warning():
    """Every off-diagonal entry 0 in float64: the unbiased CKA is NaN with a warning that says
    the bandwidth is too small, never that a representation is constant; the biased CKA is
    what its formula gives for K = L = I (1)."""
    rng = np.random.default_rng(4)
    X, Y = 100 * rng.normal(size=(40, 8)), 100 * rng.normal(size=(40, 8))  # un-normalised
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = cka(X, Y, kernel="rbf", sigma=0.4, unbiased=True)
    assert np.isnan(value)
    assert [w.category for w in caught] == [BandwidthTooSmallWarning]
    message = str(caught[0].message)
    assert "bandwidth too small" in message and "sigma=0.4" in message
    assert "constant" not in message
    assert not any(issubclass(w.category, DegenerateRepresentationWarning) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cka(X, Y, kernel="rbf", sigma=0.4) == 1.0


@pytest.mark.parametrize("space", ["feature", "gram"])
@pytest.mark.parametrize("unbiased", [False, True], ids=["biased", "unbiased"])
def test_linear_matches_longdouble_reference_when_the_diagonal_dominates(space, unbiased):
    """d >> n with large independent parts: ``|x_i|^2`` dwarfs ``x_i . x_j``; the Gram path
    accumulates without the diagonal and stays at rounding level."""
    rng = np.random.default_rng(5)
    n = 50
    shared = rng.normal(size=(n, 3))
    X = np.hstack([shared, 30 * rng.normal(size=(n, 4000))])
    Y = np.hstack([np.tanh(shared), 30 * rng.normal(size=(n, 3000))])
    Xl, Yl = X.astype(LD), Y.astype(LD)
    expected = _cka_ld(Xl @ Xl.T, Yl @ Yl.T, unbiased)
    got = cka(X, Y, unbiased=unbiased, space=space)
    assert got == pytest.approx(expected, abs=1e-9)
