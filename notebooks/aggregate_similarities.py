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
# Reads every `model_similarities/<dataset>/<metric>/` matrix of the project root and writes one
# tidy table to `results/aggregated/similarities.csv` (one row per model pair, dataset and
# metric; with the pair's interval where the matrices were computed with `--ci`). The root is
# found as by every stage: `SIMC_ROOT`, else `project_root` in this checkout — never relative to
# the folder Jupyter starts the notebook in.

# %%
from sim_consistency.aggregate import collect_similarities, plot_similarity_heatmaps, write_table
from sim_consistency.display import show
from sim_consistency.project import ProjectLocation

location = ProjectLocation.resolve()
print(f"project root: {location.root}")
similarities = collect_similarities(location)
write_table(similarities, location, "similarities")
show(
    similarities.groupby(["dataset", "metric"])["similarity"].describe().reset_index(),
    "similarity per dataset and metric (over model pairs)",
)

# %% [markdown]
# ## Heatmaps
# One figure per dataset × metric in `results/plots/similarity_*.png`: rows and columns are
# models, colour is the similarity (CKA, RSA or mutual k-NN, as the metric slug says). The colour
# scale spans the values of each figure (printed on its colour bar), so small differences show.
# Matrices computed with `--ci` carry their 95% jackknife interval (`se`, `ci_low`, `ci_high` in
# the table); their heatmaps hatch the cells whose interval is wider than ±0.05 (or that have
# none) and give the median half-width in the title.

# %%
show(plot_similarity_heatmaps(similarities, location.plots))
