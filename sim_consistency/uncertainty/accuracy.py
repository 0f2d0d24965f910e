"""Uncertainty of accuracies: soups vs ingredients, linear probes.

Paired differences. A soup and its ingredients are evaluated on the *same* test images, so
their accuracy difference is judged from per-image correctness vectors, pairing each image
with itself:

* :func:`paired_bootstrap_diff` — percentile bootstrap over test images (Efron & Tibshirani,
  1993, ch. 13) of ``mean(c_soup) - mean(reference)``, with the reference either one model
  (the best ingredient) or the per-image mean over ingredients (the mean ingredient). Resampling
  images with replacement only changes how often each distinct per-image difference occurs, so
  a replicate is one multinomial draw over the distinct differences — exactly the same
  distribution as resampling indices, in O(#distinct values) per replicate.
* :func:`mcnemar_exact` — McNemar's test (McNemar, 1947, Psychometrika 12:153) in its exact
  form: under the null the discordant images (one right, the other wrong) split 50/50, so
  the two-sided p-value is a binomial test on the discordant counts.
* :func:`verdict` — ``"supported"`` when the interval lies above ``min_effect`` (default 0),
  ``"not supported"`` when it lies entirely below it, else ``"inconclusive"``: the claim "the
  soup beats its ingredients" is never decided by comparing two means.

Probe accuracy. :func:`wilson_interval` (Wilson, 1927, JASA 22:209) for ``k`` correct of ``n``
test rows: the test rows are independent Bernoulli trials given the trained probe, and Wilson's
score interval keeps its coverage near 0 % and 100 % accuracy where the Wald interval
collapses; a bootstrap over rows estimates the same binomial variance with resampling noise.
It covers the test-set sampling only; the spread over probe seeds (training randomness) is a
separate figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from sim_consistency.errors import ConfigError

__all__ = [
    "PairedDiff",
    "bootstrap_mean_diff",
    "paired_bootstrap_diff",
    "mcnemar_exact",
    "verdict",
    "wilson_interval",
    "Verdict",
]

Verdict = Literal["supported", "not supported", "inconclusive"]


@dataclass(frozen=True)
class PairedDiff:
    """An accuracy difference over paired test images with its bootstrap interval.

    Attributes:
        diff: ``mean(correct_a) - mean(reference)`` (the plain difference of accuracies).
        ci_low, ci_high: percentile bootstrap interval at ``level``.
        se: bootstrap standard error.
        level: nominal coverage.
        n_bootstrap: replicates.
        seed: seed of the resampling.
        n_images: test images.
        method: how the interval was made.
    """

    diff: float
    ci_low: float
    ci_high: float
    se: float
    level: float
    n_bootstrap: int
    seed: int
    n_images: int
    method: str = "paired percentile bootstrap over test images (Efron & Tibshirani 1993)"


def _correctness(x: Any, name: str) -> npt.NDArray[np.float64]:
    v = np.asarray(x)
    if v.ndim != 1 or v.size == 0:
        raise ConfigError(f"{name}: expected a non-empty 1-D per-image vector (got {v.shape}).")
    if v.dtype == bool:
        return v.astype(np.float64)
    v = v.astype(np.float64)
    if not np.isfinite(v).all() or (v < 0).any() or (v > 1).any():
        raise ConfigError(f"{name}: per-image correctness must lie in [0, 1] (0/1 or bool).")
    return v


def paired_bootstrap_diff(
    correct_a: Any,
    reference: Any,
    *,
    n_bootstrap: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedDiff:
    """Return the paired bootstrap interval of an accuracy difference over test images.

    Args:
        correct_a: per-image correctness of the model under test (the soup), (n,), 0/1 or bool.
        reference: per-image correctness of the reference, (n,) (the best ingredient), or
            (n_models, n) for the mean ingredient (averaged per image: a value in [0, 1]).
        n_bootstrap: bootstrap replicates.
        level: nominal coverage.
        seed: seed of the resampling.
    """
    a = _correctness(correct_a, "paired_bootstrap_diff: correct_a")
    ref = np.asarray(reference)
    if ref.ndim == 2:
        ref = np.mean([_correctness(r, "reference") for r in ref], axis=0)
    else:
        ref = _correctness(ref, "paired_bootstrap_diff: reference")
    if ref.shape != a.shape:
        raise ConfigError(
            f"paired_bootstrap_diff: {a.size} images for the model but {ref.size} for the "
            "reference; both must be evaluated on the same test images, in the same order."
        )
    if not (isinstance(n_bootstrap, int) and n_bootstrap >= 10) or not 0 < level < 1:
        raise ConfigError(
            f"paired_bootstrap_diff: need n_bootstrap >= 10 and 0 < level < 1 (got "
            f"{n_bootstrap!r}, {level!r})."
        )
    lo, hi, se = _bootstrap_mean(a - ref, n_bootstrap, level, seed)
    return PairedDiff(
        float(a.mean() - ref.mean()), lo, hi, se, float(level), n_bootstrap, seed, a.size
    )


def _bootstrap_mean(
    d: npt.NDArray[np.float64], n_bootstrap: int, level: float, seed: int
) -> tuple[float, float, float]:
    """Percentile interval and standard error of ``mean(d)`` resampling its entries."""
    n = d.size
    values, counts = np.unique(d, return_counts=True)
    draws = np.random.default_rng(seed).multinomial(n, counts / n, size=n_bootstrap)
    boot = draws @ values / n
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi), float(boot.std(ddof=1))


def bootstrap_mean_diff(
    per_image: Any, *, n_bootstrap: int = 10_000, level: float = 0.95, seed: int = 0
) -> PairedDiff:
    """Return the percentile bootstrap over test images of the mean of per-image differences.

    For statistics that are means over images of a per-image difference already formed (e.g.
    late-minus-early soup gains, each a mean of soup-minus-ingredient correctness): the same
    resampling as :func:`paired_bootstrap_diff`, whose ``a - reference`` is such a vector.

    Args:
        per_image: (n,) finite per-image differences.
        n_bootstrap, level, seed: as in :func:`paired_bootstrap_diff`.
    """
    d = np.asarray(per_image, dtype=np.float64)
    if d.ndim != 1 or d.size == 0 or not np.isfinite(d).all():
        raise ConfigError(
            f"bootstrap_mean_diff: expected a non-empty finite 1-D vector (got {d.shape})."
        )
    if not (isinstance(n_bootstrap, int) and n_bootstrap >= 10) or not 0 < level < 1:
        raise ConfigError(
            f"bootstrap_mean_diff: need n_bootstrap >= 10 and 0 < level < 1 (got "
            f"{n_bootstrap!r}, {level!r})."
        )
    lo, hi, se = _bootstrap_mean(d, n_bootstrap, level, seed)
    return PairedDiff(float(d.mean()), lo, hi, se, float(level), n_bootstrap, seed, d.size)


def mcnemar_exact(correct_a: Any, correct_b: Any) -> tuple[int, int, float]:
    """Return ``(b, c, p_value)`` of McNemar's exact test for two paired classifiers.

    ``b``: images A gets right and B wrong; ``c``: the reverse. p-value: two-sided binomial test
    of ``b`` successes in ``b + c`` trials at 1/2 (1.0 when there are no discordant images).
    """
    a = _correctness(correct_a, "mcnemar_exact: correct_a")
    b_ = _correctness(correct_b, "mcnemar_exact: correct_b")
    if a.shape != b_.shape or not np.isin(np.concatenate([a, b_]), (0.0, 1.0)).all():
        raise ConfigError(
            "mcnemar_exact: needs two 0/1 correctness vectors over the same test images "
            f"(got {a.size} and {b_.size} values)."
        )
    b = int(((a == 1) & (b_ == 0)).sum())
    c = int(((a == 0) & (b_ == 1)).sum())
    p = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return b, c, p


def verdict(ci_low: float, ci_high: float, *, min_effect: float = 0.0) -> Verdict:
    """Return the verdict on "the difference is positive" from its confidence interval.

    Args:
        ci_low, ci_high: the interval of the difference (e.g. soup minus best ingredient).
        min_effect: the smallest difference that counts as an improvement (>= 0).

    Returns:
        ``"supported"`` if ``ci_low > min_effect``; ``"not supported"`` if ``ci_high <
        min_effect`` (the data exclude an improvement of that size); else ``"inconclusive"``
        (also for a NaN interval).
    """
    if not min_effect >= 0:
        raise ConfigError(f"verdict: min_effect must be >= 0 (got {min_effect!r}).")
    if ci_low > min_effect:
        return "supported"
    if ci_high < min_effect:
        return "not supported"
    return "inconclusive"


def wilson_interval(n_correct: int, n_total: int, *, level: float = 0.95) -> tuple[float, float]:
    """Return Wilson's score interval for an accuracy of ``n_correct`` out of ``n_total``."""
    if not (0 <= n_correct <= n_total and n_total > 0):
        raise ConfigError(
            f"wilson_interval: need 0 <= n_correct <= n_total and n_total > 0 (got "
            f"{n_correct}, {n_total})."
        )
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = n_correct / n_total
    centre = (p + z * z / (2 * n_total)) / (1 + z * z / n_total)
    half = z / (1 + z * z / n_total) * np.sqrt(p * (1 - p) / n_total + z * z / (4 * n_total**2))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))
