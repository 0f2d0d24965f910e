"""Random model-set sampling: the draws' distribution and the all-models value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim_consistency.analysis.random_sets import draw_summary, random_set_consistency
from sim_consistency.errors import ConfigError
from sim_consistency.similarity import consistency, consistency_summary

IDS = [f"m{i}" for i in range(8)]


@pytest.fixture
def matrices():
    rng = np.random.default_rng(0)
    out = {}
    base = rng.uniform(size=(8, 8))
    for d, noise in (("D1", 0.0), ("D2", 0.3), ("D3", 0.6)):
        values = np.triu(base + noise * rng.uniform(size=(8, 8)), 1)
        out[d] = pd.DataFrame(values + values.T + np.eye(8), index=IDS, columns=IDS)
    return out


def test_distribution_contains_the_all_models_value(matrices):
    draws = random_set_consistency(matrices, [4, 8], n_draws=60, seed=3)
    full = consistency_summary(consistency(matrices))["mean"]
    assert draws.loc[draws["draw"] == -1, "mean"].iloc[0] == full
    small = draws[(draws["k"] == 4) & (draws["draw"] >= 0)]["mean"]
    assert small.min() < full < small.max()
    # k = every model: every draw is the all-models set, so the value is exact.
    every = draws[(draws["k"] == 8) & (draws["draw"] >= 0)]
    assert (every["mean"] == full).all()
    summary = draw_summary(draws).set_index("k")
    assert summary.loc[8, "share_below_all_models"] == 0.0
    assert summary.loc[4, "q05"] <= full <= summary.loc[4, "q95"]
    assert summary.loc[4, "n_draws"] == 60


def test_draws_are_reproducible_by_seed(matrices):
    a = random_set_consistency(matrices, [5], n_draws=10, seed=1)
    b = random_set_consistency(matrices, [5], n_draws=10, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert all(len(m.split()) == 5 for m in a.loc[a["draw"] >= 0, "models"])


def test_bad_sizes_are_named(matrices):
    with pytest.raises(ConfigError, match=r"--set_sizes \[2, 9\]"):
        random_set_consistency(matrices, [2, 4, 9], n_draws=3)
    with pytest.raises(ConfigError, match="n_draws 0"):
        random_set_consistency(matrices, [4], n_draws=0)
