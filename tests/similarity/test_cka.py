"""CKA: identities, invariances, estimator equivalences and degenerate inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from sim_consistency.errors import ConfigError, NonFiniteError
from sim_consistency.similarity import DegenerateRepresentationWarning, cka, median_sq_distance
from sim_consistency.similarity._arrays import column_mean
from sim_consistency.similarity.cka import _upper_values

KINDS = [
    {"kernel": "linear", "unbiased": False},
    {"kernel": "linear", "unbiased": True},
    {"kernel": "rbf", "unbiased": False, "sigma_median": 0.8},
    {"kernel": "rbf", "unbiased": True, "sigma_median": 0.8},
]


def _song_unbiased_hsic(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012) eq. 5, written out on un-centred Gram matrices (the reference)."""
    n = K.shape[0]
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    one = np.ones(n)
    return (
        np.trace(K @ L)
        + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ K @ L @ one)
    ) / (n * (n - 3))


def _biased_hsic(K: np.ndarray, L: np.ndarray) -> float:
    n = K.shape[0]
    H = np.eye(n) - 1 / n
    return np.trace(K @ H @ L @ H) / (n - 1) ** 2


def _reference_cka(K: np.ndarray, L: np.ndarray, unbiased: bool) -> float:
    h = _song_unbiased_hsic if unbiased else _biased_hsic
    return h(K, L) / np.sqrt(h(K, K) * h(L, L))


@pytest.mark.parametrize("kw", KINDS)
def test_identity_is_one(pair, kw):
    X, _ = pair
    assert cka(X, X, **kw) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("kw", KINDS)
def test_symmetric(pair, kw):
    X, Y = pair
    assert cka(X, Y, **kw) == pytest.approx(cka(Y, X, **kw), abs=1e-12)


@pytest.mark.parametrize("unbiased", [False, True])
def test_linear_matches_textbook_formulas(pair, unbiased):
    X, Y = pair
    X = X + 5.0  # un-centred input: the reference works on the raw Gram matrices
    expected = _reference_cka(X @ X.T, Y @ Y.T, unbiased)
    assert cka(X, Y, unbiased=unbiased) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
def test_rbf_matches_textbook_formulas(pair, unbiased):
    X, Y = pair

    def gram(Z, sigma):
        D = ((Z[:, None, :] - Z[None, :, :]) ** 2).sum(-1)
        return np.exp(-D / (2 * sigma**2))

    expected = _reference_cka(gram(X, 2.0), gram(Y, 2.0), unbiased)
    assert cka(X, Y, kernel="rbf", sigma=2.0, unbiased=unbiased) == pytest.approx(
        expected, abs=1e-10
    )


def test_median_sq_distance_counts_all_n2_entries(rng):
    for n in (7, 8):  # odd and even n^2
        X = rng.normal(size=(n, 3))
        D = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
        assert median_sq_distance(X, slab_rows=3) == pytest.approx(np.median(D), rel=1e-12)


@pytest.mark.parametrize("kind", ["gaussian", "integer_ties", "duplicated_rows", "constant"])
@pytest.mark.parametrize("budget", [None, 7, 500])
def test_median_sq_distance_exact_with_a_small_budget(rng, kind, budget):
    """Selection by counting passes (candidates kept ≤ budget) returns np.median's value,
    also when the median sits in a tie group larger than the budget."""
    makers = {
        "gaussian": lambda n: rng.normal(size=(n, 4)),
        "integer_ties": lambda n: rng.integers(0, 3, size=(n, 3)).astype(float),
        "duplicated_rows": lambda n: np.repeat(rng.normal(size=(n // 6 + 1, 2)), 6, 0)[:n],
        "constant": lambda n: np.ones((n, 3)),
    }
    for n in (60, 61):  # even and odd n^2
        X = makers[kind](n)
        D = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
        got = median_sq_distance(X, slab_rows=8, budget=budget)
        assert got == pytest.approx(np.median(D), rel=1e-12, abs=1e-12)


def test_rbf_and_median_reject_non_finite_features_naming_the_row(rng):
    X = rng.normal(size=(20, 3))
    X[5, 1] = np.nan
    with pytest.raises(NonFiniteError, match="the first at row 5"):
        median_sq_distance(X)
    with pytest.raises(NonFiniteError, match="NaN/inf"):
        cka(X, rng.normal(size=(20, 3)), kernel="rbf", sigma_median=0.8)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["gaussian", "integer_ties", "duplicated_rows"])
@pytest.mark.parametrize("budget", [None, 7, 300])
def test_median_sq_distance_is_bitwise_numpys_median_of_the_distances(rng, kind, dtype, budget):
    """The exact median equals ``np.median`` of the n×n distances it is defined on, bit for bit
    (ties, float32 input and budgets smaller than a tie group included). The distances are
    the method's own slabs (``|a|² + |b|² − 2 a·b`` of the centred float64 rows, clamped at 0):
    a GEMM of another shape rounds some of them differently in the last bit."""
    makers = {
        "gaussian": lambda n: rng.normal(size=(n, 5)),
        "integer_ties": lambda n: rng.integers(0, 3, size=(n, 3)),
        "duplicated_rows": lambda n: np.repeat(rng.normal(size=(n // 6 + 1, 2)), 6, 0)[:n],
    }
    for n in (60, 61):  # even and odd n^2
        X = makers[kind](n).astype(dtype)
        Xc = X.astype(np.float64) - column_mean(X, 8)
        upper = np.concatenate(list(_upper_values(Xc, np.einsum("ij,ij->i", Xc, Xc), 8)))
        D = np.zeros((n, n))
        D[np.triu_indices(n, 1)] = upper  # slabs yield the strict upper triangle row by row
        D += D.T
        assert median_sq_distance(X, slab_rows=8, budget=budget) == np.median(D)


def test_median_sq_distance_memory_is_not_quadratic():
    import tracemalloc

    n = 4000
    X = np.random.default_rng(0).normal(size=(n, 8))
    upper_bytes = n * (n - 1) // 2 * 8  # what storing the upper triangle would take: 64 MB
    tracemalloc.start()
    try:
        median_sq_distance(X, slab_rows=128, budget=1 << 20)  # 8 MB of candidates
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < upper_bytes / 2


@pytest.mark.parametrize("kw", KINDS)
def test_invariant_to_rotation_scaling_translation(pair, rng, kw):
    X, Y = pair
    Q = ortho_group.rvs(X.shape[1], random_state=1)
    base = cka(X, Y, **kw)
    transformed = 1.0 * X @ Q + 3.0
    assert cka(transformed, Y, **kw) == pytest.approx(base, abs=1e-10)
    if kw["kernel"] == "linear" or "sigma_median" in kw:  # absolute σ is not scale-invariant
        assert cka(2.5 * X @ Q - 1.0, Y, **kw) == pytest.approx(base, abs=1e-10)


def test_not_invariant_to_general_linear_map(pair, rng):
    X, Y = pair
    A = rng.normal(size=(X.shape[1], X.shape[1]))
    A[:, 0] *= 20
    assert abs(cka(X @ A, Y) - cka(X, Y)) > 1e-3


@pytest.mark.parametrize("unbiased", [False, True])
def test_feature_space_equals_gram_space(pair, unbiased):
    X, Y = pair
    a = cka(X, Y, unbiased=unbiased, space="feature")
    b = cka(X, Y, unbiased=unbiased, space="gram")
    assert a == pytest.approx(b, abs=1e-10)


@pytest.mark.parametrize("kw", KINDS)
def test_streaming_equals_in_memory_for_ragged_chunks(pair, kw):
    X, Y = pair
    whole = cka(X, Y, chunk_rows=10_000, **kw)
    for chunk in (1, 7, 33):  # 80 rows: ragged last chunk
        assert cka(X, Y, chunk_rows=chunk, **kw) == pytest.approx(whole, abs=1e-12)


def test_float32_and_torch_inputs_accumulate_in_float64(pair):
    X, Y = pair
    ref = cka(X.astype(np.float32).astype(np.float64), Y.astype(np.float32), unbiased=True)
    assert cka(X.astype(np.float32), Y.astype(np.float32), unbiased=True) == pytest.approx(
        ref, abs=1e-12
    )
    assert cka(torch.from_numpy(X), torch.from_numpy(Y)) == pytest.approx(cka(X, Y), abs=1e-12)


def test_unbiased_near_zero_for_independent_high_dimensional_data(rng):
    n, d = 60, 2000
    X, Y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    biased, unbiased = cka(X, Y), cka(X, Y, unbiased=True)
    assert biased > 0.5  # inflated by d >> n
    assert abs(unbiased) < 0.05


def test_constant_representation_gives_nan_with_warning(pair):
    X, _ = pair
    C = np.ones_like(X) * 0.1
    for kw in KINDS:
        with pytest.warns(DegenerateRepresentationWarning):
            assert np.isnan(cka(X, C, **kw))


def test_errors_name_the_problem(pair):
    X, Y = pair
    with pytest.raises(ConfigError, match="80 rows but Y has 79"):
        cka(X, Y[:-1])
    with pytest.raises(ConfigError, match="at least 4 samples"):
        cka(X[:3], Y[:3], unbiased=True)
    with pytest.raises(ConfigError, match="unknown kernel"):
        cka(X, Y, kernel="poly")
    with pytest.raises(ConfigError, match="exactly one of sigma"):
        cka(X, Y, kernel="rbf")
    with pytest.raises(ConfigError, match="apply to kernel='rbf' only"):
        cka(X, Y, sigma=0.4)


def test_no_warning_on_regular_inputs(pair):
    X, Y = pair
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cka(X, Y, unbiased=True)


@pytest.mark.parametrize("unbiased", [False, True])
def test_streams_an_hdf5_block_in_chunks(pair, tmp_path, unbiased):
    import h5py

    X, Y = pair
    path = tmp_path / "block.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=X.astype(np.float32))
    expected = cka(X.astype(np.float32), Y, unbiased=unbiased)
    with h5py.File(path, "r") as f:
        for chunk in (7, 80, 1000):  # ragged, exact, one chunk
            got = cka(f["x"], Y, unbiased=unbiased, space="feature", chunk_rows=chunk)
            assert got == pytest.approx(expected, abs=1e-12)
