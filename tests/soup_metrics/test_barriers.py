"""Barriers: hand-checked curves, convex paths, and the all-pairs matrix."""

from __future__ import annotations

import numpy as np
import pytest

from sim_consistency.errors import ConfigError
from sim_consistency.soup_metrics import (
    DEFAULT_ALPHAS,
    barrier,
    barrier_matrix,
    interpolation_alphas,
)


def test_default_grid_has_11_points_with_endpoints():
    assert len(DEFAULT_ALPHAS) == 11 and DEFAULT_ALPHAS[0] == 0.0 and DEFAULT_ALPHAS[-1] == 1.0
    np.testing.assert_allclose(interpolation_alphas(5), [0, 0.25, 0.5, 0.75, 1])


def test_hand_checked_bump():
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    errors = [0.10, 0.30, 0.50, 0.20, 0.30]
    out = barrier(alphas, errors)
    assert out["barrier_midpoint"] == pytest.approx(0.50 - 0.20)  # Frankle et al. 2020
    assert out["barrier_midpoint_alpha"] == 0.5
    # linear reference at α=0.5 is 0.20 → excess 0.30; at 0.25: 0.30 − 0.15 = 0.15
    assert out["barrier"] == pytest.approx(0.30)  # Entezari et al. 2022, the headline
    assert out["barrier_alpha"] == 0.5
    assert out["value_max"] == 0.5


def test_convex_path_has_no_linear_barrier():
    alphas = interpolation_alphas(11)
    errors = 0.2 + 0.3 * (alphas - 0.4) ** 2 - 0.05 * alphas  # convex
    out = barrier(alphas, errors)
    assert out["barrier"] <= 1e-15
    flat = barrier(alphas, 0.1 + 0.5 * (alphas - 0.5) ** 2 - 0.125)  # convex, equal endpoints
    assert flat["barrier"] <= 1e-15 and flat["barrier_midpoint"] <= 1e-15


@pytest.mark.parametrize(
    "errors",
    [
        [0.10, 0.08, 0.06, 0.04, 0.02],  # straight and monotone (W0 → a better fine-tuned model)
        [0.10, 0.05, 0.03, 0.025, 0.02],  # monotone, sagging below the straight line
    ],
)
def test_monotone_path_without_bump_has_zero_headline_barrier(errors):
    out = barrier([0.0, 0.25, 0.5, 0.75, 1.0], errors)
    assert out["barrier"] == pytest.approx(0.0, abs=1e-15)
    # Frankle et al.'s midpoint barrier is |E(1) − E(0)| / 2 here, though the path has no bump.
    assert out["barrier_midpoint"] == pytest.approx((0.10 - 0.02) / 2)


def test_monotone_path_above_its_chord_is_a_bump():
    out = barrier([0.0, 0.25, 0.5, 0.75, 1.0], [0.10, 0.10, 0.10, 0.10, 0.02])
    assert out["barrier"] == pytest.approx(0.10 - (0.25 * 0.10 + 0.75 * 0.02))
    assert out["barrier_alpha"] == 0.75


def test_definitions_name_their_papers():
    from sim_consistency.soup_metrics import BARRIER_DEFINITIONS

    assert "Entezari et al. 2022" in BARRIER_DEFINITIONS["barrier"]
    assert "Frankle et al. 2020" in BARRIER_DEFINITIONS["barrier_midpoint"]


def test_identical_endpoints_constant_curve_is_zero():
    out = barrier(DEFAULT_ALPHAS, [0.25] * 11)
    assert out["barrier"] == 0.0 and out["barrier_midpoint"] == 0.0


def test_bad_curves_are_rejected():
    with pytest.raises(ConfigError, match="0 to 1"):
        barrier([0.0, 0.5, 0.9], [1, 2, 3])
    with pytest.raises(ConfigError, match="non-finite"):
        barrier([0.0, 0.5, 1.0], [1, float("nan"), 3])
    with pytest.raises(ConfigError, match="equal length"):
        barrier([0.0, 1.0], [1, 2, 3])
    with pytest.raises(ConfigError, match="at least 3"):
        interpolation_alphas(2)


def test_barrier_matrix_is_symmetric():
    m = barrier_matrix(["a", "b", "c"], {("a", "b"): 0.1, ("c", "a"): 0.2, ("b", "c"): 0.3})
    assert np.allclose(m.to_numpy(), m.to_numpy().T)
    assert m.loc["a", "c"] == 0.2 and m.loc["b", "b"] == 0.0
    with pytest.raises(ConfigError, match="'a', 'c'"):
        barrier_matrix(["a", "b", "c"], {("a", "b"): 0.1, ("b", "c"): 0.3})


def test_cross_entropy_matches_torch():
    import torch

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 7)) * 30  # large logits: no overflow
    labels = rng.integers(0, 7, size=50)
    expected = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits), torch.from_numpy(labels)
    ).item()
    from sim_consistency.soup_metrics.barriers import cross_entropy

    assert cross_entropy(logits, labels) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ConfigError, match="do not match"):
        cross_entropy(logits, labels + 7)
