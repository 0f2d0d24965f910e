"""Mutual k-NN: neighbour tables, duplicate rows, deterministic ties, errors."""

from __future__ import annotations

import numpy as np
import pytest

from sim_consistency.errors import ConfigError
from sim_consistency.similarity import knn_table, mutual_knn


def test_identity_is_one_and_score_in_unit_interval(pair):
    X, Y = pair
    assert mutual_knn(X, X, k=5) == 1.0
    assert 0.0 <= mutual_knn(X, Y, k=5) <= 1.0
    assert mutual_knn(X, Y, k=5) == mutual_knn(Y, X, k=5)


def test_matches_brute_force(pair):
    X, Y = pair
    k = 4

    def brute(Z):
        Zn = Z / np.linalg.norm(Z, axis=1, keepdims=True)
        S = Zn @ Zn.T
        np.fill_diagonal(S, -np.inf)
        return [set(np.argsort(-S[i], kind="stable")[:k]) for i in range(len(Z))]

    a, b = brute(X), brute(Y)
    expected = np.mean([len(a[i] & b[i]) / k for i in range(len(X))])
    assert mutual_knn(X, Y, k=k) == pytest.approx(expected)


def test_duplicate_rows_are_neighbours_and_ties_break_by_index(rng):
    base = rng.normal(size=(6, 5))
    X = np.concatenate([base, base, base])  # rows i, i+6, i+12 are identical
    table = knn_table(X, 2, slab_rows=4)
    for i in range(6):
        assert list(table[i]) == [i + 6, i + 12]  # self excluded by index, lower index first
        assert list(table[i + 6]) == [i, i + 12]
    again = knn_table(X[::-1].copy()[::-1], 2, slab_rows=5)
    np.testing.assert_array_equal(table, again)


def test_errors(pair):
    X, Y = pair
    with pytest.raises(ConfigError, match="k=80"):
        mutual_knn(X, Y, k=80)
    with pytest.raises(ConfigError, match="positive integer"):
        mutual_knn(X, Y, k=0)
    with pytest.raises(ConfigError, match="80 rows but Y has 5"):
        mutual_knn(X, Y[:5])


def test_constant_representation_gives_nan_with_the_same_warning_as_other_metrics():
    from sim_consistency.similarity import DegenerateRepresentationWarning, cka

    X = np.random.default_rng(0).normal(size=(40, 5))
    C = np.full((40, 5), 0.3)
    for a, b in ((X, C), (C, X), (C, C)):
        with pytest.warns(DegenerateRepresentationWarning, match="mutual_knn"):
            assert np.isnan(mutual_knn(a, b, k=5))
    with pytest.warns(DegenerateRepresentationWarning):
        assert np.isnan(cka(X, C))
