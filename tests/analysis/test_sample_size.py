"""CKA sub-sampling curves converge to the full-sample value."""

from __future__ import annotations

import numpy as np
import pytest

from sim_consistency.analysis.sample_size import (
    convergence_summary,
    sample_counts,
    subsample_curves,
)
from sim_consistency.config.similarity import MetricSpec
from sim_consistency.errors import ConfigError
from sim_consistency.similarity import similarity_matrix

SPEC = MetricSpec(sim_method="cka", sim_kernel="linear", unbiased=True)


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 10))
    return [X, np.tanh(X @ rng.normal(size=(10, 8))) + 0.5 * rng.normal(size=(400, 8)),
            rng.normal(size=(400, 6))]  # fmt: skip


def test_curve_reaches_the_full_value_and_its_error_shrinks(features):
    curves = subsample_curves(
        features, ["x", "y", "z"], SPEC, [25, 50, 100, 200, 400], [0, 1, 2, 3]
    )
    full = similarity_matrix(features, SPEC)
    at_all = curves[curves["n"] == 400]
    assert (at_all["abs_error"] == 0).all()
    assert at_all.query("model_a == 'x' and model_b == 'y'")["similarity"].iloc[0] == full[0, 1]
    summary = convergence_summary(curves).set_index("n")
    errors = summary["mean_abs_error"].to_numpy()
    assert (np.diff(errors) < 0).all(), errors  # monotone convergence on this seeded case
    assert summary.loc[400, "mean_seed_std"] == 0.0
    assert summary.loc[25, "mean_seed_std"] > summary.loc[200, "mean_seed_std"]


def test_a_seed_draws_the_same_rows_for_every_model(features):
    curves = subsample_curves(features, ["x", "y", "z"], SPEC, [60], [7])
    idx = np.sort(np.random.default_rng(7).choice(400, size=60, replace=False))
    expected = similarity_matrix([f[idx] for f in features], SPEC)
    got = curves.set_index(["model_a", "model_b"])["similarity"]
    assert got[("y", "z")] == expected[1, 2]


def test_sample_counts_and_errors():
    assert sample_counts(350) == [100, 200, 300, 350]
    assert sample_counts(350, [50, 10]) == [10, 50, 350]
    assert sample_counts(100) == [100]
    with pytest.raises(ConfigError, match=r"--sample_sizes \[3, 500\]"):
        sample_counts(350, [3, 500, 20])
    with pytest.raises(ConfigError, match="computed for CKA metrics"):
        subsample_curves([np.ones((5, 2))] * 2, ["a", "b"], MetricSpec("mknn", k=2), [5], [0])
