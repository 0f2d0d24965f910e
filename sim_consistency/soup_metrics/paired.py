"""Soup vs ingredients on paired test images: bootstrap intervals, McNemar's test, verdicts.

A soup and its ingredients are scored on the same test images, so the question "does the soup
beat its best / mean ingredient?" is answered from per-image correctness
(:mod:`sim_consistency.uncertainty.accuracy`):

* ``over_best_ci_low/high`` — paired percentile bootstrap over images of ``acc(soup) −
  acc(best ingredient)`` (the best by test accuracy, as in :func:`soup_improvement`);
* ``mcnemar_soup_only``, ``mcnemar_best_only``, ``mcnemar_p`` — McNemar's exact test of soup
  vs best ingredient: images only the soup gets right, only the best gets right, two-sided p;
* ``over_mean_ci_low/high`` — the same bootstrap of ``acc(soup) − mean_i acc(ingredient_i)``
  (the reference is the per-image mean correctness over the ingredients);
* ``over_best_verdict``, ``over_mean_verdict`` — ``supported`` (interval above 0), ``not
  supported`` (below 0) or ``inconclusive`` (:func:`~sim_consistency.uncertainty.verdict`).

The intervals describe test-set sampling given the trained models; they say nothing about
retraining the ingredients with other seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from sim_consistency.errors import ConfigError
from sim_consistency.uncertainty import mcnemar_exact, paired_bootstrap_diff, verdict

__all__ = ["PAIRED_COLUMNS", "soup_paired_tests"]

#: The columns :func:`soup_paired_tests` adds.
PAIRED_COLUMNS = (
    "over_best_ci_low",
    "over_best_ci_high",
    "over_best_verdict",
    "mcnemar_soup_only",
    "mcnemar_best_only",
    "mcnemar_p",
    "over_mean_ci_low",
    "over_mean_ci_high",
    "over_mean_verdict",
    "n_bootstrap",
    "ci_level",
)


def soup_paired_tests(
    table: pd.DataFrame,
    soups: Mapping[str, Sequence[str]],
    correct: Mapping[tuple[str, str], np.ndarray],
    *,
    n_bootstrap: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Return :func:`soup_improvement`'s table with the paired intervals and tests added.

    Args:
        table: rows ``soup_id, dataset, best_ingredient, improvement_over_best,
            improvement_over_mean``.
        soups: ``{soup_id: [ingredient ids]}``.
        correct: ``{(model_id, dataset): (n,) bool}`` per-image correctness, every model of a
            dataset over the same images in the same order.
        n_bootstrap, level, seed: of the paired bootstrap (the seed is shared by every row).

    Raises:
        ConfigError: missing correctness, or correctness whose accuracy difference is not the
            table's (the predictions are not those the accuracies were computed from).
    """
    rows = []
    for r in table.to_dict("records"):
        dataset, soup = r["dataset"], r["soup_id"]
        ingredients = list(soups[soup])
        absent = [m for m in [soup, *ingredients] if (m, dataset) not in correct]
        if absent:
            raise ConfigError(
                f"soup_paired_tests: no per-image correctness of {absent} on {dataset}."
            )
        c_soup = correct[(soup, dataset)]
        c_best = correct[(r["best_ingredient"], dataset)]
        best = paired_bootstrap_diff(
            c_soup, c_best, n_bootstrap=n_bootstrap, level=level, seed=seed
        )
        mean = paired_bootstrap_diff(
            c_soup,
            np.stack([correct[(m, dataset)] for m in ingredients]),
            n_bootstrap=n_bootstrap,
            level=level,
            seed=seed,
        )
        for name, diff in (("best", best), ("mean", mean)):
            if abs(diff.diff - r[f"improvement_over_{name}"]) > 1e-9:
                raise ConfigError(
                    f"soup_paired_tests: soup {soup!r} on {dataset}: per-image correctness gives "
                    f"{diff.diff:+.6f} over the {name} ingredient but the accuracies "
                    f"{r[f'improvement_over_{name}']:+.6f}; the stored predictions are stale."
                )
        only_soup, only_best, p = mcnemar_exact(c_soup, c_best)
        rows.append(
            {
                "over_best_ci_low": best.ci_low,
                "over_best_ci_high": best.ci_high,
                "over_best_verdict": verdict(best.ci_low, best.ci_high),
                "mcnemar_soup_only": only_soup,
                "mcnemar_best_only": only_best,
                "mcnemar_p": p,
                "over_mean_ci_low": mean.ci_low,
                "over_mean_ci_high": mean.ci_high,
                "over_mean_verdict": verdict(mean.ci_low, mean.ci_high),
                "n_bootstrap": n_bootstrap,
                "ci_level": level,
            }
        )
    added = pd.DataFrame(rows, columns=list(PAIRED_COLUMNS), index=table.index)
    return pd.concat([table, added], axis=1)
