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
# # Model×model similarities
#
# Reads every `model_similarities/<dataset>/<metric>/` matrix of the project root (the root
# comes from `SIMC_ROOT`, else `./project_root`, as for every stage) and writes one tidy table to
# `results/aggregated/similarities.csv` (one row per model pair, dataset and metric).

# %%
from sim_consistency.aggregate import collect_similarities, plot_similarity_heatmaps, write_table
from sim_consistency.project import ProjectLocation

location = ProjectLocation.resolve()
similarities = collect_similarities(location)
write_table(similarities, location, "similarities")
similarities.groupby(["dataset", "metric"])["similarity"].describe()

# %% [markdown]
# ## Heatmaps
# One figure per dataset × metric in `results/plots/similarity_*.png`: rows and columns are
# models, colour is the similarity (CKA, RSA or mutual k-NN, as the metric slug says) on a fixed
# 0–1 scale so figures compare. A bright block is a family of models that represent the data
# alike — e.g. the fine-tuned runs and their soups around W0.

# %%
[p.name for p in plot_similarity_heatmaps(similarities, location.plots)]
