# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Soups vs ingredients
#
# Reads the tables of `results/soup_metrics/` (written by `scripts/soup_metrics.py`) and copies
# the key ones to `results/aggregated/soups_*.csv`.

# %%
from sim_consistency.aggregate import collect_soup_metrics, plot_soup_improvement, write_table
from sim_consistency.project import ProjectLocation

location = ProjectLocation.resolve()
tables = collect_soup_metrics(location)
for name in ("soup_vs_ingredients", "weight_pairs", "barriers", "branching_soup_results", "purity"):
    if name in tables:
        write_table(tables[name], location, f"soups_{name}")
sorted(tables)

# %% [markdown]
# ## Soup improvement
# `results/plots/soup_improvement.png`: per soup and dataset, the soup's accuracy minus the mean
# (left bar) and the best (right bar) of its ingredients, in percentage points. Above zero the
# soup beats its ingredients — the model-soups paper's headline; below zero, averaging left the
# shared basin.

# %%
plot_soup_improvement(tables["soup_vs_ingredients"], location.plots).name

# %% [markdown]
# ## Barriers and basins
# Error/loss barriers of the linear paths between models: near zero means the endpoints sit in
# one linearly connected basin, where averaging weights is safe.

# %%
tables.get("barriers")
