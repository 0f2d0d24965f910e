"""Fixtures for the uncertainty tests: seeded related representations."""

from __future__ import annotations

import numpy as np
import pytest


def related(rng: np.random.Generator, n: int, p: int = 3) -> list[np.ndarray]:
    """Three representations of n samples: X, a noisy nonlinear map of X, and noise."""
    X = rng.normal(size=(n, p)) + 2.0
    Y = np.tanh(X @ rng.normal(size=(p, p + 2))) + 0.3 * rng.normal(size=(n, p + 2))
    return [X, Y, rng.normal(size=(n, 4))]


@pytest.fixture
def features() -> list[np.ndarray]:
    return related(np.random.default_rng(0), 53)
