from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sim_consistency.errors import ConfigError
from sim_consistency.uncertainty import jackknife_interval, row_groups


def test_row_groups_are_seeded_balanced_and_ignore_row_order():
    g = row_groups(103, 20, seed=5)
    assert np.array_equal(g, row_groups(103, 20, seed=5))
    assert not np.array_equal(g, row_groups(103, 20, seed=6))
    sizes = np.bincount(g, minlength=20)
    assert sizes.sum() == 103 and sizes.min() == 5 and sizes.max() == 6
    # random, not contiguous: a class-sorted dataset is not split by class
    assert len(set(g[:10])) > 5


@pytest.mark.parametrize("n, k", [(5, 20), (30, 1), (30, True)])
def test_row_groups_reject_impossible_splits(n, k):
    with pytest.raises(ConfigError, match="group"):
        row_groups(n, k)


def test_jackknife_interval_matches_the_textbook_formula():
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(3, 10))
    point = np.array([0.1, 0.2, 0.3])
    ci = jackknife_interval(point, theta, bias_correct=False, seed=4)
    k = 10
    se = np.sqrt((k - 1) / k * ((theta - theta.mean(1, keepdims=True)) ** 2).sum(1))
    t = stats.t.ppf(0.975, k - 1)
    np.testing.assert_allclose(ci.se, se, rtol=1e-14)
    np.testing.assert_allclose(ci.ci_low, point - t * se, rtol=1e-14)
    np.testing.assert_allclose(ci.bias, (k - 1) * (theta.mean(1) - point), rtol=1e-14)
    assert ci.point is point and ci.n_groups == 10 and ci.seed == 4
    corrected = jackknife_interval(point, theta)
    np.testing.assert_allclose(corrected.ci_high, point - ci.bias + t * se, rtol=1e-14)
    assert "bias-corrected" in corrected.method and corrected.to_metadata()["ci_n_groups"] == 10


def test_jackknife_of_the_mean_is_the_classical_standard_error():
    """Delete-one jackknife of a mean: se = s / sqrt(n) exactly, no bias."""
    x = np.random.default_rng(1).normal(size=25)
    loo = (x.sum() - x) / (x.size - 1)
    ci = jackknife_interval(x.mean(), loo)
    assert ci.se == pytest.approx(x.std(ddof=1) / np.sqrt(x.size), rel=1e-12)
    assert abs(ci.bias) < 1e-14


def test_nan_leave_out_values_give_nan_intervals():
    ci = jackknife_interval(0.5, [0.4, np.nan, 0.6])
    assert np.isnan(ci.se) and np.isnan(ci.ci_low)
