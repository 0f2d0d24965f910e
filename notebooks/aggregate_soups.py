# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Soups vs ingredients
#
# Reads the tables of `results/soup_metrics/` (written by `scripts/soup_metrics.py`) and copies
# the key ones to `results/aggregated/soups_*.csv`. The root is found as by every stage
# (`SIMC_ROOT`, else `project_root` in this checkout).

# %%
from sim_consistency.aggregate import (
    collect_soup_metrics,
    n_test_images,
    plot_soup_improvement,
    write_table,
)
from sim_consistency.display import show
from sim_consistency.project import ProjectLocation
from sim_consistency.soup_metrics import BARRIER_DEFINITIONS

location = ProjectLocation.resolve()
print(f"project root: {location.root}")
tables = collect_soup_metrics(location)
for name in ("soup_vs_ingredients", "weight_pairs", "barriers", "branching_soup_results", "purity"):
    if name in tables:
        write_table(tables[name], location, f"soups_{name}")
show(tables["soup_vs_ingredients"], "soups vs their ingredients")

# %% [markdown]
# ## Soup improvement
# `results/plots/soup_improvement.png`: per soup and dataset, the soup's accuracy minus the mean
# (left bar) and the best (right bar) of its ingredients, in percentage points; the dotted lines
# mark ± one test image, the smallest difference the test set can show. Error bars: the paired
# 95 % bootstrap interval over test images (`over_mean_ci_*`, `over_best_ci_*`); the verdict
# columns say "supported" only when the interval lies above 0, "not supported" when below,
# else "inconclusive"; `mcnemar_p` is McNemar's exact test of soup vs best ingredient.

# %%
n_test = n_test_images(location)
verdicts = [c for c in ("over_best_verdict", "over_mean_verdict", "mcnemar_p")
            if c in tables["soup_vs_ingredients"]]  # fmt: skip
if verdicts:
    show(tables["soup_vs_ingredients"][["soup_id", "dataset", *verdicts]], "verdicts")
show(plot_soup_improvement(tables["soup_vs_ingredients"], location.plots, n_test=n_test))

# %% [markdown]
# ## Barriers
# Error/loss barriers of the linear paths between models (two definitions, below); a barrier
# near 0 means the endpoints sit in one linearly connected basin.

# %%
for column, definition in BARRIER_DEFINITIONS.items():
    print(f"{column}: {definition}")
if "barriers" in tables:
    show(tables["barriers"], "interpolation barriers")
