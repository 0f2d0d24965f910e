"""Barriers along linear interpolation paths between two models.

On the path θ(α) = (1−α)·θ_A + α·θ_B, evaluated on a grid of α that includes both endpoints,
with a curve ``E(α)`` (test error or loss), two definitions are computed and both reported:

* ``barrier`` — the **headline**, the linear-reference barrier of Entezari et al. 2022 ("The
  Role of Permutation Invariance in Linear Mode Connectivity of Neural Networks", ICLR, Def. 1):
  ``max_α [E(α) − ((1−α)E(0) + αE(1))]``, the largest excess of the path over the straight line
  between its endpoint values. It is 0 for a path with no bump — straight, sagging (convex), or
  monotone without rising above that line — even when the endpoints differ (W0 → a better
  fine-tuned model), and positive exactly when the path rises above the line.
* ``barrier_midpoint`` — the error-barrier height of Frankle et al. 2020 ("Linear Mode
  Connectivity and the Lottery Ticket Hypothesis", ICML): ``max_α E(α) − ½(E(0) + E(1))``, the
  rise above the endpoints' mean. It is at least ``|E(1) − E(0)| / 2`` whenever the endpoints
  differ, so it is positive for a monotone path with no bump; it is the natural measure only
  between endpoints of equal quality (the paper compares two runs of one network).

Both maxima run over the whole grid, endpoints included, so both are ≥ 0. A barrier near 0
means A and B sit in one linearly connected basin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from sim_consistency.errors import ConfigError
from sim_consistency.merging.generate import interpolation_alphas

__all__ = [
    "BARRIER_DEFINITIONS",
    "DEFAULT_ALPHAS",
    "barrier",
    "barrier_matrix",
    "cross_entropy",
    "interpolation_alphas",
]


#: The default α grid (11 points, step 0.1).
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in interpolation_alphas(11))


#: What each barrier column of :func:`barrier` (and ``barriers.csv``) measures, with its paper.
BARRIER_DEFINITIONS: dict[str, str] = {
    "barrier": "linear-reference barrier (Entezari et al. 2022): max over α of "
    "E(α) − ((1−α)·E(0) + α·E(1)); 0 for a path with no bump above the straight line between "
    "its endpoints (the headline)",
    "barrier_midpoint": "midpoint barrier (Frankle et al. 2020): max over α of "
    "E(α) − ½(E(0) + E(1)); at least |E(1) − E(0)|/2 when the endpoints differ",
}


def barrier(alphas: npt.ArrayLike, values: npt.ArrayLike) -> dict[str, float]:
    """Return the linear-reference (headline) and midpoint barriers of one interpolation curve.

    Args:
        alphas: the α grid, strictly increasing, starting at 0 and ending at 1.
        values: ``E(α)`` at each α (error or loss: higher is worse).

    Returns:
        ``{"barrier", "barrier_alpha", "barrier_midpoint", "barrier_midpoint_alpha",
        "value_start", "value_end", "value_max"}``: ``barrier`` is the linear-reference
        barrier (Entezari et al. 2022), ``barrier_midpoint`` Frankle et al.'s 2020 one (see
        :data:`BARRIER_DEFINITIONS`); each ``*_alpha`` is where the maximum is reached.

    Raises:
        ConfigError: lengths differ, α is not an increasing grid from 0 to 1, or a value is
            not finite.
    """
    a = np.asarray(alphas, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if a.shape != v.shape or a.ndim != 1 or a.size < 2:
        raise ConfigError(
            f"barrier: alphas and values must be 1-D of equal length ≥ 2 "
            f"(got {a.shape} and {v.shape})."
        )
    if not (np.isclose(a[0], 0.0) and np.isclose(a[-1], 1.0) and np.all(np.diff(a) > 0)):
        raise ConfigError(
            f"barrier: alphas must increase from 0 to 1, endpoints included (got {a.tolist()})."
        )
    if not np.all(np.isfinite(v)):
        raise ConfigError(f"barrier: the curve has non-finite values (got {v.tolist()}).")
    midpoint_excess = v - 0.5 * (v[0] + v[-1])
    linear_excess = v - ((1.0 - a) * v[0] + a * v[-1])
    i, j = int(np.argmax(linear_excess)), int(np.argmax(midpoint_excess))
    return {
        "barrier": float(linear_excess[i]),
        "barrier_alpha": float(a[i]),
        "barrier_midpoint": float(midpoint_excess[j]),
        "barrier_midpoint_alpha": float(a[j]),
        "value_start": float(v[0]),
        "value_end": float(v[-1]),
        "value_max": float(v.max()),
    }


def barrier_matrix(
    model_ids: Sequence[str],
    pair_barriers: Mapping[tuple[str, str], float],
) -> pd.DataFrame:
    """Return the symmetric all-pairs barrier matrix (zero diagonal) as a DataFrame.

    Args:
        model_ids: row/column order.
        pair_barriers: ``{(a, b): barrier}`` for every unordered pair (either order).

    Raises:
        ConfigError: a pair is missing.
    """
    ids = list(model_ids)
    out = pd.DataFrame(np.zeros((len(ids), len(ids))), index=ids, columns=ids)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            value = pair_barriers.get((a, b), pair_barriers.get((b, a)))
            if value is None:
                raise ConfigError(f"barrier_matrix: no barrier for the pair ({a!r}, {b!r}).")
            out.loc[a, b] = out.loc[b, a] = float(value)
    return out


def cross_entropy(logits: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Return the mean cross-entropy (nats) of ``logits`` ``(n, C)`` for integer ``labels``.

    Computed in float64 with a max-shifted log-sum-exp, so large logits do not overflow.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if (
        z.ndim != 2
        or z.shape[0] != y.shape[0]
        or (y.size and (y.min() < 0 or y.max() >= z.shape[1]))
    ):
        raise ConfigError(
            f"cross_entropy: logits {z.shape} and labels {y.shape} (range "
            f"{y.min() if y.size else '-'}…{y.max() if y.size else '-'}) do not match."
        )
    shift = z.max(axis=1, keepdims=True)
    log_norm = shift[:, 0] + np.log(np.exp(z - shift).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(y)), y]))
