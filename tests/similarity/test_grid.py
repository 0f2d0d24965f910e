"""cka_grid and similarity_matrix: agreement with pairwise cka, symmetry, PSD."""

from __future__ import annotations

import numpy as np
import pytest

from sim_consistency.config.similarity import MetricSpec
from sim_consistency.errors import ConfigError
from sim_consistency.similarity import (
    DegenerateRepresentationWarning,
    cka,
    cka_grid,
    similarity_matrix,
)


@pytest.fixture
def blocks(rng):
    X = rng.normal(size=(50, 8))
    out = []
    for d in (8, 16, 6):
        X = np.tanh(X @ rng.normal(size=(X.shape[1], d))) + 0.1 * rng.normal(size=(50, d))
        out.append(X)
    return out


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("space", ["feature", "gram"])
def test_grid_matches_pairwise_cka(blocks, unbiased, space):
    other = [b[:, ::-1] * 2 + 1 for b in blocks[1:]]
    grid = cka_grid(blocks, other, unbiased=unbiased, space=space)
    assert grid.shape == (3, 2)
    for i, a in enumerate(blocks):
        for j, b in enumerate(other):
            assert grid[i, j] == pytest.approx(cka(a, b, unbiased=unbiased), abs=1e-10)


def test_self_grid_is_symmetric_with_unit_diagonal(blocks):
    grid = cka_grid(blocks, blocks)
    np.testing.assert_allclose(grid, grid.T, atol=0)
    np.testing.assert_allclose(np.diag(grid), 1.0, atol=1e-12)


def test_grid_rejects_misaligned_rows(blocks):
    with pytest.raises(ConfigError, match=r"blocks_b\[0\] has 49 rows"):
        cka_grid(blocks, [blocks[0][:-1]])


SPECS = [
    MetricSpec("cka", sim_kernel="linear", unbiased=False),
    MetricSpec("cka", sim_kernel="linear", unbiased=True),
    MetricSpec("cka", sim_kernel="rbf", unbiased=True, sigma=0.4),
    MetricSpec("rsa", rsa_method="correlation", corr_method="spearman"),
    MetricSpec("mknn", k=5),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.sim_method + str(s.unbiased))
def test_similarity_matrix_symmetric_unit_diagonal(blocks, spec):
    feats = [blocks[0], blocks[1], blocks[2], blocks[0] + 0.5 * blocks[0] ** 2]
    M = similarity_matrix(feats, spec)
    np.testing.assert_allclose(M, M.T, atol=0)
    np.testing.assert_allclose(np.diag(M), 1.0, atol=1e-12)


def test_biased_linear_cka_matrix_is_psd(rng):
    # Linear CKA is a cosine similarity between centred Gram matrices: a Gram matrix itself.
    feats = [rng.normal(size=(40, d)) @ rng.normal(size=(d, d)) for d in (3, 5, 8, 13, 21, 34)]
    spec = MetricSpec("cka", sim_kernel="linear", unbiased=False)
    M = similarity_matrix(feats, spec, normalize=False)
    assert np.linalg.eigvalsh(M).min() > -1e-12
    np.testing.assert_allclose(
        similarity_matrix(feats, spec, normalize=False, space="gram"), M, atol=1e-10
    )


def test_similarity_matrix_prepares_each_representation_once(blocks, monkeypatch):
    from sim_consistency.similarity import matrix

    calls = []
    prepare, compare = matrix.SIMILARITY_METRICS["cka"]

    def counting_prepare(X, spec, space):
        calls.append(X.shape)
        return prepare(X, spec, space)

    monkeypatch.setitem(matrix.SIMILARITY_METRICS, "cka", (counting_prepare, compare))
    feats = [blocks[0], blocks[1], blocks[2], blocks[1] ** 3]
    M = similarity_matrix(feats, MetricSpec("cka", sim_kernel="linear", unbiased=True))
    assert len(calls) == 4 and M.shape == (4, 4)


def test_constant_representation_is_nan_in_the_matrix(blocks):
    feats = [blocks[0], np.ones_like(blocks[1]), blocks[2]]
    with pytest.warns(DegenerateRepresentationWarning):
        M = similarity_matrix(feats, MetricSpec("cka", sim_kernel="linear", unbiased=False))
    assert np.isnan(M[1]).all() and np.isnan(M[:, 1]).all()
    assert np.isfinite(M[np.ix_([0, 2], [0, 2])]).all()
