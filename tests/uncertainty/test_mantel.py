"""Mantel permutation test and bootstrap over models for the consistency of two matrices."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from sim_consistency.errors import ConfigError
from sim_consistency.similarity import consistency
from sim_consistency.uncertainty import (
    bootstrap_models_ci,
    consistency_ci,
    consistency_tests,
    mantel_test,
)


def sym(rng: np.random.Generator, m: int) -> np.ndarray:
    S = rng.random((m, m))
    S = (S + S.T) / 2
    np.fill_diagonal(S, 1.0)
    return S


def frame(S: np.ndarray, ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(S, index=ids, columns=ids)


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_statistic_is_bitwise_the_consistency_table_entry(method):
    rng = np.random.default_rng(0)
    ids = [f"m{i}" for i in range(7)]
    A = sym(rng, 7)
    B = A + 0.3 * sym(rng, 7)
    fa, fb = frame(A, ids), frame(B, ids)
    fb = fb.loc[ids[::-1], ids[::-1]]  # different model order: aligned by id
    res = consistency_ci(fa, fb, method=method, n_permutations=99, n_bootstrap=200, seed=1)
    table = consistency({"a": fa, "b": fb}, method)
    assert res.statistic == table.loc["a", "b"]
    assert res.ci_low < res.statistic < res.ci_high
    assert res.p_value == pytest.approx(0.01)  # no permutation reaches a strong association
    assert res.to_metadata()["n_permutations"] == 99 and res.n_models == 7


def test_p_value_matches_the_exact_permutation_distribution():
    """M = 5: 120 permutations; the Monte Carlo p estimates the exact one."""
    rng = np.random.default_rng(3)
    A, B = sym(rng, 5), sym(rng, 5)
    iu = np.triu_indices(5, 1)
    r = np.corrcoef(A[iu], B[iu])[0, 1]
    exact = np.mean(
        [
            np.corrcoef(A[iu], B[np.ix_(p, p)][iu])[0, 1] >= r - 1e-12
            for p in map(list, itertools.permutations(range(5)))
        ]
    )
    _, p = mantel_test(A, B, n_permutations=20000, seed=0)
    assert p == pytest.approx(exact, abs=0.01)


@pytest.mark.parametrize("method", ["pearson", "spearman"])
@pytest.mark.parametrize("alternative", ["greater", "two-sided"])
def test_false_positive_rate_on_independent_matrices(method, alternative):
    """≤ 6 % rejections at 0.05 over 1000 pairs of independent matrices (issue 20; measured
    5.4–5.7 %, binomial sd 0.7 %; 500 replicates gave 4.8–6.0 %)."""
    rng = np.random.default_rng(11)
    rejections = 0
    for r in range(1000):
        _, p = mantel_test(
            sym(rng, 8),
            sym(rng, 8),
            method=method,
            n_permutations=199,
            alternative=alternative,
            seed=r,
        )
        rejections += p <= 0.05
    assert rejections / 1000 <= 0.06


def test_permuting_pairs_instead_of_models_would_be_anticonservative():
    """Matrices built from model-level effects: a pair-level null rejects far too often;
    the Mantel test keeps its level (why models, not pairs, are permuted)."""
    rng = np.random.default_rng(5)
    mantel_rej = naive_rej = 0
    iu = np.triu_indices(10, 1)
    for r in range(200):
        u, v = rng.normal(size=10), rng.normal(size=10)  # independent model-level effects
        A = np.add.outer(u, u) + 0.1 * sym(rng, 10)
        B = np.add.outer(v, v) ** 2 + 0.1 * sym(rng, 10)
        _, p = mantel_test(A, B, n_permutations=199, alternative="two-sided", seed=r)
        mantel_rej += p <= 0.05
        x, y = A[iu] - A[iu].mean(), B[iu] - B[iu].mean()
        x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
        perm = rng.permuted(np.tile(y, (199, 1)), axis=1) @ x  # pairs shuffled freely
        obs = abs(x @ y)
        naive_rej += (1 + (np.abs(perm) >= obs).sum()) / 200 <= 0.05
    assert mantel_rej / 200 <= 0.08
    assert naive_rej / 200 > 0.15


def test_bootstrap_drops_self_copy_pairs():
    """The diagonal is never used: a NaN diagonal still gives a finite interval."""
    rng = np.random.default_rng(2)
    A = sym(rng, 9)
    B = A + 0.2 * sym(rng, 9)
    np.fill_diagonal(A, np.nan)
    np.fill_diagonal(B, np.nan)
    lo, hi = bootstrap_models_ci(A, B, n_bootstrap=300, seed=0)
    assert np.isfinite(lo) and lo < hi
    again = bootstrap_models_ci(A, B, n_bootstrap=300, seed=0)
    assert again == (lo, hi)


def test_bad_inputs_are_named():
    A = sym(np.random.default_rng(0), 5)
    B = A.copy()
    B[1, 3] = B[3, 1] = np.nan
    with pytest.raises(
        ConfigError, match=r"matrix B has 1 NaN/inf pair\(s\), the first at models \(1, 3\)"
    ):
        mantel_test(A, B)
    with pytest.raises(ConfigError, match="method"):
        mantel_test(A, A, method="kendall")
    with pytest.raises(ConfigError, match="same models"):
        mantel_test(A, A[:4, :4])


# -- model-set restrictions (--set_a/--set_b) ------------------------------------------------


def bipartite(n_a: int, n_b: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Pairs (a, b), a in A = 0..n_a-1, b in B = n_a..n_a+n_b-1, and the strata labels."""
    a, b = np.meshgrid(np.arange(n_a), n_a + np.arange(n_b), indexing="ij")
    return (a.ravel(), b.ravel()), np.repeat([0, 1], [n_a, n_b])


def test_restricted_permutations_keep_each_model_in_its_set():
    from sim_consistency.uncertainty.mantel import _strata, _within_strata

    strata = np.array([0, 1, 0, 2, 1, 0])
    p = _within_strata(np.random.default_rng(0), _strata(6, strata), 6, 500)
    assert (strata[p] == strata).all()  # a model only moves within its stratum
    assert len({tuple(r) for r in p}) == 12  # 3! · 2! · 1!, all reached
    # one stratum of all models: the draws of the all-pairs test, unchanged
    one = _within_strata(np.random.default_rng(4), _strata(5, None), 5, 7)
    plain = np.random.default_rng(4).permuted(np.tile(np.arange(5), (7, 1)), axis=1)
    assert np.array_equal(one, plain)


def test_restricted_p_value_matches_the_exact_within_set_distribution():
    """A = 3 models, B = 4: 3! · 4! = 144 permutations, enumerated."""
    rng = np.random.default_rng(8)
    pairs, strata = bipartite(3, 4)
    A, B = sym(rng, 7), sym(rng, 7)
    x = A[pairs]
    r = np.corrcoef(x, B[pairs])[0, 1]
    exact = np.mean(
        [
            np.corrcoef(x, B[np.ix_(p, p)][pairs])[0, 1] >= r - 1e-12
            for pa in itertools.permutations(range(3))
            for pb in itertools.permutations(range(3, 7))
            for p in [list(pa) + list(pb)]
        ]
    )
    stat, p = mantel_test(A, B, n_permutations=20000, seed=0, pairs=pairs, strata=strata)
    assert stat == pytest.approx(r, abs=1e-12)
    assert p == pytest.approx(exact, abs=0.01)


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_restricted_identical_matrices_give_the_smallest_p(method):
    rng = np.random.default_rng(1)
    pairs, strata = bipartite(6, 5)
    A = sym(rng, 11)
    B = A + 0.01 * sym(rng, 11)
    _, p = mantel_test(A, B, method=method, n_permutations=199, pairs=pairs, strata=strata)
    assert p == pytest.approx(1 / 200)
    lo, hi = bootstrap_models_ci(A, B, method=method, n_bootstrap=300, pairs=pairs, strata=strata)
    assert 0.9 < lo <= hi <= 1.0 + 1e-12


def _restricted_null_rate(n_rep: int, method: str, seed: int) -> tuple[float, float]:
    """Rejection rate at 0.05 on independent matrices with model-level effects, and the KS p of
    the p-values against uniform (discrete p: a loose check)."""
    from scipy import stats as sps

    rng = np.random.default_rng(seed)
    pairs, strata = bipartite(5, 4)
    ps = []
    for r in range(n_rep):
        u, v = rng.normal(size=9), rng.normal(size=9)  # model effects: pairs are dependent
        A = np.add.outer(u, u) + 0.5 * sym(rng, 9)
        B = np.add.outer(v, v) + 0.5 * sym(rng, 9)
        _, p = mantel_test(
            A, B, method=method, n_permutations=99, pairs=pairs, strata=strata, seed=r
        )
        ps.append(p)
    ps = np.array(ps)
    return float((ps <= 0.05).mean()), float(sps.kstest(ps, "uniform").pvalue)


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_restricted_false_positive_rate_is_nominal(method):
    """300 independent pairs of matrices, disjoint sets of 5 and 4 models: rejections at 0.05
    near 5 % (binomial sd 1.3 %), p-values roughly uniform."""
    rate, ks_p = _restricted_null_rate(300, method, seed=21)
    assert rate <= 0.085
    assert ks_p > 0.001


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_restricted_false_positive_rate_is_nominal_long(method):
    """4000 replicates: ≤ 6 % at 0.05 (the issue's bound; measured 5.0 % for both methods,
    binomial sd 0.35 %; the 300-replicate fast version measured 6.0 %)."""
    rate, ks_p = _restricted_null_rate(4000, method, seed=23)
    assert rate <= 0.06 and ks_p > 0.01


def test_permuting_all_models_under_a_restriction_would_be_invalid():
    """Permutations that move models across sets are refused (they do not keep the pairs)."""
    pairs, _ = bipartite(3, 3)
    A = sym(np.random.default_rng(0), 6)
    with pytest.raises(ConfigError, match="would not map them onto themselves"):
        mantel_test(A, A, pairs=pairs)  # one stratum: A's and B's models mixed


def test_restricted_consistency_ci_and_its_notes():
    rng = np.random.default_rng(3)
    ids = [f"m{i}" for i in range(8)]
    A = sym(rng, 8)
    fa, fb = frame(A, ids), frame(A + 0.05 * sym(rng, 8), ids)
    sets = (ids[:5], ids[5:])
    pairs = [(a, b) for a in sets[0] for b in sets[1]]
    res = consistency_ci(
        fa, fb, model_pairs=pairs, model_sets=sets, n_permutations=99, n_bootstrap=200
    )
    table = consistency({"a": fa, "b": fb}, "pearson", model_pairs=pairs)
    assert res.statistic == table.loc["a", "b"]  # bitwise the restricted table entry
    assert res.p_value == pytest.approx(0.01) and res.ci_low > 0.5
    assert res.n_models == 8
    with pytest.raises(ConfigError, match="model_sets"):
        consistency_ci(fa, fb, model_pairs=pairs)
    # one model in B: permutations of A only (3! = 6: coarse), no bootstrap over B
    small = (ids[:3], ids[3:4])
    one = [(a, ids[3]) for a in small[0]]
    rows = consistency_tests(
        {"a": fa, "b": fb}, model_pairs=one, model_sets=small, n_permutations=99, n_bootstrap=50
    )
    row = rows.iloc[0]
    assert np.isfinite(row["p_value"]) and row["p_value"] >= 1 / 6 - 0.05
    assert np.isnan(row["ci_low"]) and "one model" in row["note"] and "1/6" in row["note"]
    assert row["tested"] and not row["resolved"]
