"""Delete-a-group jackknife: seeded row groups and the interval from leave-group-out values.

The rows (samples, test images) are split at random into ``K`` disjoint groups of near-equal
size (:func:`row_groups`, seeded, the assignment returned so that it can be recorded). A
statistic is recomputed — exactly, from per-group sufficient statistics, see the metric modules
— with each group left out, giving ``theta_(g)``, ``g = 1..K``. Following the grouped
jackknife of Efron & Stein (1981, "The jackknife estimate of variance", Ann. Statist. 9:586)
and Efron (1982, "The Jackknife, the Bootstrap and Other Resampling Plans", ch. 3.7):

* ``se^2 = (K-1)/K · sum_g (theta_(g) - theta_bar)^2``;
* ``bias = (K-1) (theta_bar - theta_hat)`` (Quenouille's bias estimate);
* the interval is ``(theta_hat - bias) ± t_{K-1, 1-alpha/2} · se``: centred on the
  bias-corrected estimate (the mean of the pseudo-values), with Student's t on K - 1 degrees of
  freedom, as the K pseudo-values give K - 1 degrees of freedom for the variance.

The point estimate stays the estimator's own number; only the interval is bias-corrected. This
matters for the *biased* HSIC estimators, whose O(1/n) bias can exceed their standard error at
small n (biased RBF CKA, n = 100: bias ≈ 2 se; an interval centred on the point covered the
large-sample value in 57 % of replicates, the bias-corrected one in 92 %, see
tests/uncertainty/test_coverage.py). A biased estimate can therefore lie outside its own
interval: the interval is for the population value, not for the estimator's mean. For the
unbiased estimators and RSA the correction is negligible (``bias_correct=False`` centres the
interval on the point).

Groups differ in size by at most one row (``n mod K`` groups have one more); the formula is the
equal-size one, whose error from that imbalance is O(K/n) of the variance and negligible here
(Busing, Meijer & van der Leeden, 1999, give the weighted form for strongly unequal groups).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from sim_consistency.errors import ConfigError
from sim_consistency.similarity._arrays import random_groups

__all__ = ["DEFAULT_GROUPS", "Interval", "row_groups", "jackknife_interval"]

#: Default number of jackknife groups.
DEFAULT_GROUPS = 20


def row_groups(n: int, n_groups: int = DEFAULT_GROUPS, *, seed: int = 0) -> npt.NDArray[np.int64]:
    """Return a random group label in ``[0, n_groups)`` for each of ``n`` rows, (n,).

    ``np.random.default_rng(seed).permutation(n) % n_groups``: groups of ``n // K`` or
    ``n // K + 1`` rows, independent of the row order (a class-sorted dataset is not split by
    class).

    Raises:
        ConfigError: fewer than 2 groups, or fewer rows than groups.
    """
    if isinstance(n_groups, bool) or not isinstance(n_groups, int | np.integer) or n_groups < 2:
        raise ConfigError(f"jackknife: n_groups must be an integer >= 2 (got {n_groups!r}).")
    if n < n_groups:
        raise ConfigError(
            f"jackknife: {n} rows cannot be split into {n_groups} non-empty groups; use fewer "
            "groups (n_groups) or more samples."
        )
    return random_groups(n, int(n_groups), seed)


@dataclass(frozen=True, eq=False)
class Interval:
    """A point estimate with its standard error and confidence interval (arrays or scalars).

    Attributes:
        point: the estimator's own value (bitwise what the plain function returns).
        se: standard error.
        ci_low, ci_high: the confidence interval at ``level``.
        level: nominal coverage, e.g. 0.95.
        method: how the interval was made (e.g. ``"jackknife-t, K=20 groups"``).
        n_groups: K for a jackknife, else ``None``.
        seed: seed of the row groups (or of the resampling).
        bias: jackknife bias estimate ``(K-1)(theta_bar - theta_hat)`` (not applied), or None.
        groups: the row-group label of each row, (n,), or None.
        leave_out: the leave-group-out values, (..., K), or None.
    """

    point: Any
    se: Any
    ci_low: Any
    ci_high: Any
    level: float
    method: str
    n_groups: int | None = None
    seed: int | None = None
    bias: Any = None
    groups: npt.NDArray[np.int64] | None = field(default=None, repr=False)
    leave_out: Any = field(default=None, repr=False)

    def to_metadata(self) -> dict[str, Any]:
        """Return what ``metadata.json`` should record about the interval (no arrays)."""
        return {
            "ci_method": self.method,
            "ci_level": self.level,
            "ci_n_groups": self.n_groups,
            "ci_seed": self.seed,
        }


def _check_level(level: float) -> float:
    if not (isinstance(level, float | int) and 0.0 < float(level) < 1.0):
        raise ConfigError(f"level must be a number in (0, 1), e.g. 0.95 (got {level!r}).")
    return float(level)


def jackknife_interval(
    point: Any,
    leave_out: Any,
    *,
    level: float = 0.95,
    seed: int | None = None,
    groups: npt.NDArray[np.int64] | None = None,
    bias_correct: bool = True,
) -> Interval:
    """Return the delete-a-group jackknife interval from leave-group-out values.

    Args:
        point: the full-sample estimate, scalar or array of shape ``S``.
        leave_out: ``theta_(g)``, shape ``S + (K,)``: the estimate with group g left out.
        level: nominal coverage of the two-sided interval.
        seed: seed of the row groups (recorded).
        groups: the row-group labels (recorded).
        bias_correct: centre the interval on ``theta_hat - bias`` (see the module docstring).

    Returns:
        :class:`Interval` with arrays of shape ``S`` (NaN where the point or any leave-out value
        is NaN: no interval is invented for an undefined similarity).
    """
    level = _check_level(level)
    theta = np.asarray(leave_out, dtype=np.float64)
    k = theta.shape[-1]
    if k < 2:
        raise ConfigError(f"jackknife: needs at least 2 leave-group-out values (got {k}).")
    point_arr = np.asarray(point, dtype=np.float64)
    mean = theta.mean(axis=-1)
    se = np.sqrt((k - 1) / k * ((theta - mean[..., None]) ** 2).sum(axis=-1))
    half = stats.t.ppf(0.5 + level / 2, df=k - 1) * se
    bias = (k - 1) * (mean - point_arr)
    centre = point_arr - bias if bias_correct else point_arr
    low, high = centre - half, centre + half
    if np.ndim(point) == 0:
        se, low, high, bias = float(se), float(low), float(high), float(bias)
    return Interval(
        point=point,
        se=se,
        ci_low=low,
        ci_high=high,
        level=level,
        method=(
            f"delete-a-group jackknife (Efron & Stein 1981), K={k} groups, t_{k - 1} interval"
            + (" around the bias-corrected estimate" if bias_correct else "")
        ),
        n_groups=k,
        seed=seed,
        bias=bias,
        groups=groups,
        leave_out=theta,
    )
