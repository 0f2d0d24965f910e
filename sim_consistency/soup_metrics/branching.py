"""Branching / basin analysis: do runs that fork late from a shared trajectory make better soups?

The "branching soups" study forks fine-tuning runs from one training trajectory at several
*branching epochs*, trains each branch (different learning rates or seeds) and looks at them after
several *analysis epochs*. Hypothesis: early branches land in different basins (far apart, poor
soups); late branches stay in one basin (close, good soups).

Inputs are tidy tables, so the analysis is the same whether accuracies come from model heads or
probes and distances from :func:`~sim_consistency.soup_metrics.weights.weight_geometry`:

* ``runs``: ``model_id, branch_epoch, analysis_epoch, accuracy`` — one row per branched run;
* ``distances``: ``model_a, model_b, l2_distance`` — whole-model distances (any superset);
* ``soups``: ``branch_epoch, analysis_epoch, soup_id, soup_accuracy`` — the uniform soup of the
  runs of each (branch_epoch, analysis_epoch) group.

:func:`branching_tables` returns the three tables of the study (individual models, pairwise
distances within each group, soup results with improvement over the mean/best and the average
distance) and :func:`basin_summary` the observation: the mean soup improvement over the mean
ingredient for early (branch epochs below the median) vs late (at or above it) branching, their
difference in percentage points and in test images, and the Spearman correlation of improvement
with branching epoch. The verdict on "late branching makes better soups" is ``supported`` /
``not supported`` / ``inconclusive`` from a paired bootstrap interval over test images of that
difference (:func:`~sim_consistency.uncertainty.bootstrap_mean_diff`), never from the bare
difference of means; without per-image correctness it is ``inconclusive`` (not tested).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from sim_consistency.errors import ConfigError
from sim_consistency.uncertainty import Verdict, bootstrap_mean_diff, verdict

__all__ = ["GROUP", "basin_summary", "branching_tables"]

#: The columns that identify one group of branched runs (one soup).
GROUP: tuple[str, str] = ("branch_epoch", "analysis_epoch")


def _require(table: pd.DataFrame, columns: set[str], what: str) -> None:
    missing = columns - set(table.columns)
    if missing:
        raise ConfigError(f"branching analysis: {what} table lacks columns {sorted(missing)}.")


def _pair_distance(distances: pd.DataFrame) -> dict[frozenset, float]:
    return {
        frozenset((a, b)): float(d)
        for a, b, d in distances[["model_a", "model_b", "l2_distance"]].itertuples(index=False)
    }


def branching_tables(
    runs: pd.DataFrame, distances: pd.DataFrame, soups: pd.DataFrame
) -> dict[str, pd.DataFrame]:
    """Return ``{"individual", "pairwise_distances", "soup_results"}`` tables of the study.

    ``soup_results`` columns: ``branch_epoch, analysis_epoch, soup_id, n_models, soup_accuracy,
    mean_individual_accuracy, best_individual_accuracy, improvement_over_mean,
    improvement_over_best, mean_l2_distance``.

    Raises:
        ConfigError: missing columns, a soup group without runs, or a missing pair distance.
    """
    _require(runs, {"model_id", *GROUP, "accuracy"}, "runs")
    _require(distances, {"model_a", "model_b", "l2_distance"}, "distances")
    _require(soups, {*GROUP, "soup_id", "soup_accuracy"}, "soups")
    pair_distance = _pair_distance(distances)

    pair_rows = []
    for (branch, analysis), group in runs.groupby(list(GROUP), sort=True):
        for a, b in itertools.combinations(sorted(group["model_id"]), 2):
            key = frozenset((a, b))
            if key not in pair_distance:
                raise ConfigError(
                    f"branching analysis: no distance between {a!r} and {b!r} "
                    f"(branch epoch {branch}, analysis epoch {analysis})."
                )
            pair_rows.append(
                {
                    "branch_epoch": branch,
                    "analysis_epoch": analysis,
                    "model_a": a,
                    "model_b": b,
                    "l2_distance": pair_distance[key],
                }
            )
    pairwise = pd.DataFrame(
        pair_rows, columns=["branch_epoch", "analysis_epoch", "model_a", "model_b", "l2_distance"]
    )
    mean_distance = pairwise.groupby(list(GROUP))["l2_distance"].mean()

    soup_rows = []
    for soup in soups.sort_values(list(GROUP)).itertuples(index=False):
        group = (soup.branch_epoch, soup.analysis_epoch)
        members = runs[(runs["branch_epoch"] == group[0]) & (runs["analysis_epoch"] == group[1])][
            "accuracy"
        ].to_numpy(dtype=np.float64)
        if members.size == 0:
            raise ConfigError(
                f"branching analysis: soup {soup.soup_id!r} has no runs at branch epoch "
                f"{group[0]}, analysis epoch {group[1]}."
            )
        soup_rows.append(
            {
                "branch_epoch": group[0],
                "analysis_epoch": group[1],
                "soup_id": soup.soup_id,
                "n_models": int(members.size),
                "soup_accuracy": float(soup.soup_accuracy),
                "mean_individual_accuracy": float(members.mean()),
                "best_individual_accuracy": float(members.max()),
                "improvement_over_mean": float(soup.soup_accuracy) - float(members.mean()),
                "improvement_over_best": float(soup.soup_accuracy) - float(members.max()),
                "mean_l2_distance": float(mean_distance.get(group, np.nan)),
            }
        )
    individual = runs.sort_values([*GROUP, "model_id"]).reset_index(drop=True)
    return {
        "individual": individual,
        "pairwise_distances": pairwise,
        "soup_results": pd.DataFrame(soup_rows),
    }


def basin_summary(
    soup_results: pd.DataFrame,
    *,
    n_test: int | None = None,
    per_image: np.ndarray | None = None,
    n_bootstrap: int = 10_000,
    seed: int = 0,
) -> dict[str, object]:
    """Return how late- and early-branching soups compare, with the numbers and their verdict.

    Early = branch epochs below the median of the distinct branch epochs; late = the rest.
    Improvement = soup accuracy − mean ingredient accuracy, averaged over analysis epochs.
    With ``per_image`` — per soup row, the per-image improvement ``c_soup − mean_i c_i`` over
    the same test images — the difference late − early is a mean over images of
    ``mean_late(row) − mean_early(row)``, so a paired bootstrap over images gives its 95 %
    interval (``ci_low``, ``ci_high``) and :func:`~sim_consistency.uncertainty.verdict` the
    ``verdict``; ``late_branching_better`` is True / False / None for supported / not
    supported / inconclusive. With ``n_test`` the statement also gives the difference in test
    images (one image is ``1 / n_test`` of accuracy).

    Args:
        soup_results: the ``soup_results`` table of :func:`branching_tables`.
        n_test: number of test images the accuracies were measured on (None: unknown).
        per_image: (len(soup_results), n_images) per-image improvements over the mean
            ingredient, rows in ``soup_results`` order (None: no test, verdict inconclusive).
        n_bootstrap, seed: of the paired bootstrap.

    Returns:
        ``early_epochs, late_epochs, early_improvement, late_improvement, difference,
        n_test, resolution, difference_in_images, n_soups_early, n_soups_late,
        runs_per_soup, spearman_improvement_vs_branch_epoch,
        spearman_distance_vs_branch_epoch, ci_low, ci_high, n_bootstrap, seed, verdict,
        late_branching_better, statement``.
    """
    from scipy.stats import spearmanr

    _require(soup_results, {"branch_epoch", "improvement_over_mean"}, "soup_results")
    epochs = np.array(sorted(soup_results["branch_epoch"].unique()))
    if epochs.size < 2:
        raise ConfigError(
            f"basin_summary: needs at least two branching epochs (got {epochs.tolist()})."
        )
    if n_test is not None and n_test < 1:
        raise ConfigError(f"basin_summary: n_test must be a positive count (got {n_test}).")
    median = float(np.median(epochs))
    early = [int(e) for e in epochs if e < median] or [int(epochs[0])]
    late = [int(e) for e in epochs if e not in early]
    improvement = soup_results["improvement_over_mean"]
    is_early = soup_results["branch_epoch"].isin(early)
    is_late = soup_results["branch_epoch"].isin(late)
    early_value = float(improvement[is_early].mean())
    late_value = float(improvement[is_late].mean())
    difference = late_value - early_value
    runs_per_soup = (
        sorted({int(n) for n in soup_results["n_models"]}) if "n_models" in soup_results else []
    )

    def _spearman(column: str) -> float:
        if column not in soup_results or soup_results[column].nunique() < 2:
            return float("nan")
        return float(spearmanr(soup_results["branch_epoch"], soup_results[column]).statistic)

    resolution = 1.0 / n_test if n_test else None
    in_images = difference * n_test if n_test else None
    ci_low = ci_high = float("nan")
    outcome: Verdict = "inconclusive"
    if per_image is not None:
        rows = np.asarray(per_image, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[0] != len(soup_results):
            raise ConfigError(
                f"basin_summary: per_image must have one row per soup ({len(soup_results)}), "
                f"got shape {rows.shape}."
            )
        d = rows[is_late.to_numpy()].mean(axis=0) - rows[is_early.to_numpy()].mean(axis=0)
        paired = bootstrap_mean_diff(d, n_bootstrap=n_bootstrap, seed=seed)
        ci_low, ci_high = paired.ci_low, paired.ci_high
        outcome = verdict(ci_low, ci_high)
    better = {"supported": True, "not supported": False}.get(outcome)
    observed = (
        f"Observed: soups of runs forked late (epochs {late}, {int(is_late.sum())} soup(s)) "
        f"improved on their mean ingredient by {100 * late_value:+.2f} pp on average, soups of "
        f"runs forked early (epochs {early}, {int(is_early.sum())} soup(s)) by "
        f"{100 * early_value:+.2f} pp: a difference of {100 * difference:+.2f} pp"
    )
    runs = f"{'/'.join(map(str, runs_per_soup))} run(s) per soup" if runs_per_soup else ""
    if n_test:
        observed += (
            f" = {in_images:+.1f} test image(s) (n = {n_test} test images, so one image is "
            f"{100 / n_test:.2f} pp; {runs}, one training seed per run, no repeats). "
        )
    else:
        observed += f" ({runs}; test-set size unknown, so its resolution is not stated). "
    if per_image is None:
        observed += "Not tested (no per-image correctness): inconclusive."
    else:
        observed += (
            f"95% paired bootstrap interval over test images {100 * ci_low:+.2f} to "
            f"{100 * ci_high:+.2f} pp: 'late branching makes better soups' is {outcome}"
            + " (test-set sampling only; one training seed per run)."
        )
    return {
        "early_epochs": early,
        "late_epochs": late,
        "early_improvement": early_value,
        "late_improvement": late_value,
        "difference": difference,
        "n_test": n_test,
        "resolution": resolution,
        "difference_in_images": in_images,
        "n_soups_early": int(is_early.sum()),
        "n_soups_late": int(is_late.sum()),
        "runs_per_soup": runs_per_soup,
        "spearman_improvement_vs_branch_epoch": _spearman("improvement_over_mean"),
        "spearman_distance_vs_branch_epoch": _spearman("mean_l2_distance"),
        "ci_low": ci_low,
        "ci_high": ci_high,
        "n_bootstrap": n_bootstrap if per_image is not None else 0,
        "seed": seed,
        "verdict": outcome,
        "late_branching_better": better,
        "statement": observed,
    }
