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
# Reads the tables of `results/soup_metrics/` (written by `scripts/soup_metrics.py`), copies the
# key ones to `results/aggregated/` and draws the summary figures to `results/plots/`.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from sim_consistency.aggregate import collect_soup_metrics, write_table
from sim_consistency.project import ProjectLocation

location = ProjectLocation.resolve()
location.plots.mkdir(parents=True, exist_ok=True)
tables = collect_soup_metrics(location)
for name in ("soup_vs_ingredients", "weight_pairs", "barriers", "branching_soup_results", "purity"):
    if name in tables:
        write_table(tables[name], location, f"soups_{name}")
sorted(tables)

# %% [markdown]
# ## Soup improvement
# Per soup and dataset: accuracy of the soup minus the mean (left bar) and the best (right bar)
# of its ingredients, in percentage points. Bars above zero mean the soup beats its ingredients —
# the model-soups paper's headline; below zero, averaging left the shared basin.

# %%
if "soup_vs_ingredients" in tables:
    table = tables["soup_vs_ingredients"]
    labels = [f"{s}\n{d.split('/')[-1]}" for s, d in zip(table["soup_id"], table["dataset"])]
    x = range(len(table))
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(table)), 4))
    ax.bar([i - 0.2 for i in x], 100 * table["improvement_over_mean"], width=0.4, label="vs mean")
    ax.bar([i + 0.2 for i in x], 100 * table["improvement_over_best"], width=0.4, label="vs best")
    ax.axhline(0, color="black", linewidth=1)
    ax.set_xticks(list(x), labels, fontsize=7)
    ax.set_ylabel("improvement (pp)")
    ax.set_title("Soup improvement over its ingredients")
    ax.legend()
    fig.savefig(location.plots / "soup_improvement.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    table

# %% [markdown]
# ## Barriers
# Loss and error barriers of the linear paths between models: near zero means the two endpoints
# sit in one linearly connected basin, where averaging their weights is safe.

# %%
tables.get("barriers")
