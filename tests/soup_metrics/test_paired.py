"""Soup vs ingredients on paired test images: constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim_consistency.errors import ConfigError
from sim_consistency.soup_metrics import soup_improvement, soup_paired_tests


def _case(soup_gain: int, n: int = 400, seed: int = 0):
    """Ingredients a (70 %) and b (60 %); the soup is a with ``soup_gain`` images fixed."""
    rng = np.random.default_rng(seed)
    a = (rng.permutation(n) < 0.7 * n).astype(float)
    b = (rng.permutation(n) < 0.6 * n).astype(float)
    soup = a.copy()
    flip = np.flatnonzero(a == 0 if soup_gain > 0 else a == 1)[: abs(soup_gain)]
    soup[flip] = 1 - soup[flip]
    correct = {("soup", "d"): soup, ("a", "d"): a, ("b", "d"): b}
    accuracy = pd.DataFrame(
        [(m, "d", float(c.mean())) for (m, _), c in correct.items()],
        columns=["model_id", "dataset", "top1"],
    )
    soups = {"soup": ["a", "b"]}
    return soup_improvement(accuracy, soups), soups, correct


@pytest.mark.parametrize(
    ("gain", "expected"), [(40, "supported"), (-40, "not supported"), (2, "inconclusive")]
)
def test_verdict_over_the_best_ingredient(gain, expected):
    table, soups, correct = _case(gain)
    row = soup_paired_tests(table, soups, correct, n_bootstrap=2000).iloc[0]
    assert row["best_ingredient"] == "a"
    assert row["improvement_over_best"] == pytest.approx(gain / 400)
    assert row["over_best_verdict"] == expected
    assert row["over_best_ci_low"] <= row["improvement_over_best"] <= row["over_best_ci_high"]
    # the soup differs from a only on the flipped images: McNemar's counts are exact
    assert (row["mcnemar_soup_only"], row["mcnemar_best_only"]) == (max(gain, 0), max(-gain, 0))
    assert (row["mcnemar_p"] < 0.05) == (expected != "inconclusive")
    # the mean ingredient scores 65 %, 5 pp below the best
    assert row["improvement_over_mean"] == pytest.approx(gain / 400 + 0.05)


def test_point_columns_are_unchanged_and_stale_predictions_are_refused():
    table, soups, correct = _case(10)
    out = soup_paired_tests(table, soups, correct, n_bootstrap=100)
    pd.testing.assert_frame_equal(out[table.columns], table)  # bitwise the plain table
    stale = {**correct, ("a", "d"): 1 - correct[("a", "d")]}
    with pytest.raises(ConfigError, match="stale"):
        soup_paired_tests(table, soups, stale, n_bootstrap=100)
    with pytest.raises(ConfigError, match="no per-image correctness"):
        soup_paired_tests(table, soups, {("soup", "d"): correct[("soup", "d")]})
