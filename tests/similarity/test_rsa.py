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
