"""RSA: RDMs and their comparison against scipy on the strict upper triangle."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import pdist
from scipy.stats import pearsonr, spearmanr

from sim_consistency.errors import ConfigError
from sim_consistency.similarity import DegenerateRepresentationWarning, rdm_upper, rsa


@pytest.mark.parametrize("rdm,metric", [("correlation", "correlation"), ("cosine", "cosine")])
def test_rdm_matches_scipy_pdist(pair, rdm, metric):
    X, _ = pair
    np.testing.assert_allclose(rdm_upper(X, rdm=rdm, slab_rows=7), pdist(X, metric), atol=1e-12)


@pytest.mark.parametrize("corr,fn", [("spearman", spearmanr), ("pearson", pearsonr)])
@pytest.mark.parametrize("rdm", ["correlation", "cosine"])
def test_rsa_matches_scipy(pair, corr, fn, rdm):
    X, Y = pair
    expected = fn(pdist(X, rdm), pdist(Y, rdm))[0]
    assert rsa(X, Y, rdm=rdm, corr=corr) == pytest.approx(expected, abs=1e-12)


def test_spearman_uses_average_ranks_for_ties(rng):
    X = rng.integers(0, 2, size=(12, 3)).astype(float)
    X[:, 0] += 1  # rows with equal patterns give tied dissimilarities
    Y = rng.normal(size=(12, 4))
    tied = np.round(pdist(X, "cosine"), 12)
    assert len(np.unique(tied)) < tied.size / 2
    expected = spearmanr(tied, pdist(Y, "cosine"))[0]
    assert rsa(X, Y, rdm="cosine") == pytest.approx(expected, abs=1e-12)


def test_identity_and_symmetry(pair):
    X, Y = pair
    assert rsa(X, X) == pytest.approx(1.0)
    assert rsa(X, Y) == pytest.approx(rsa(Y, X), abs=1e-14)


def test_constant_rows_give_nan_with_warning(pair):
    X, _ = pair
    C = np.ones_like(X)
    with pytest.warns(DegenerateRepresentationWarning):
        assert np.isnan(rsa(X, C))


def test_errors(pair):
    X, Y = pair
    with pytest.raises(ConfigError, match="80 rows but Y has 10"):
        rsa(X, Y[:10])
    with pytest.raises(ConfigError, match="unknown corr"):
        rsa(X, Y, corr="kendall")
    with pytest.raises(ConfigError, match="unknown rdm"):
        rsa(X, Y, rdm="euclid")


# -- compact exact form (doubled ranks) of the streamed model×model path ----------------------


def _reference_doubled(v):
    from scipy.stats import rankdata

    return 2 * rankdata(np.round(v, 12), method="average")


@pytest.mark.parametrize(
    "case", ["continuous", "few_values", "all_equal", "half_ulp_boundaries", "large"]
)
def test_doubled_ranks_are_twice_scipy_average_ranks(case):
    from sim_consistency.similarity.rsa import doubled_ranks

    rng = np.random.default_rng(5)
    v = {
        "continuous": rng.random(3000) * 2,
        "few_values": rng.integers(0, 7, 4000) / 3.0,
        "all_equal": np.full(50, 0.7),
        # values straddling the 12-decimal rounding boundaries: ties decided by the rounding
        "half_ulp_boundaries": (rng.integers(0, 200, 5000) + 0.5) * 1e-12
        + rng.choice([-1e-17, 0.0, 1e-17], 5000),
        "large": rng.standard_normal(2000) * 1e7,  # beyond 64-bit keys: the argsort path
    }[case]
    r = doubled_ranks(v)
    assert r.dtype == np.int32
    np.testing.assert_array_equal(r, _reference_doubled(v))


def test_bucketed_sort_equals_a_stable_argsort():
    """Keys too wide to pack with their index go through the radix buckets, ties included."""
    from sim_consistency.similarity.rsa import _sorted_buckets

    rng = np.random.default_rng(6)
    for keys in (
        rng.integers(0, 2**50, 100_000, dtype=np.uint64),  # 50 + 17 bits: 3 bucket bits
        rng.integers(0, 300, 100_000, dtype=np.uint64) << np.uint64(44),  # ties, 8 buckets
    ):
        runs = list(_sorted_buckets(keys))
        assert len(runs) > 1
        order = np.concatenate([o for _, o, _ in runs])
        np.testing.assert_array_equal(order, np.argsort(keys, kind="stable"))
        np.testing.assert_array_equal(np.concatenate([k for _, _, k in runs]), np.sort(keys))
        assert [s for s, _, _ in runs] == list(np.cumsum([0] + [o.size for _, o, _ in runs])[:-1])


@pytest.mark.parametrize("corr", ["spearman", "pearson"])
@pytest.mark.parametrize("rdm", ["correlation", "cosine"])
def test_rdm_vector_is_the_standardised_triangle(corr, rdm):
    from sim_consistency.similarity.rsa import rdm_vector, rsa_stats

    rng = np.random.default_rng(7)
    X = rng.standard_normal((80, 6))
    X[:, :3] = np.round(X[:, :3])  # many tied dissimilarities
    vec, ref = rdm_vector(X, rdm=rdm, corr=corr), rsa_stats(X, rdm=rdm, corr=corr)
    centred = vec.values.astype(np.float64) - vec.offset
    assert abs(np.linalg.norm(centred) / vec.norm - 1) <= 1e-14  # exact norm from tie counts
    np.testing.assert_allclose(centred / vec.norm, ref.z, rtol=0, atol=1e-14)
    assert rdm_vector(np.ones((5, 3)), corr=corr).values is None  # NaN RDM: undefined
