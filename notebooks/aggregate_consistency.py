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
# # Rep2Rep consistency, and similarity vs performance
#
# Reads the consistency tables of `results/consistency/` (do similarity rankings of models hold
# from one dataset to another?) into `results/aggregated/consistency.csv`. The root is found as
# by every stage (`SIMC_ROOT`, else `project_root` in this checkout).

# %%
from sim_consistency.aggregate import (
    collect_consistency,
    collect_probes,
    collect_similarities,
    plot_consistency,
    similarity_vs_performance,
    write_table,
)
from sim_consistency.display import show
from sim_consistency.project import ProjectLocation

location = ProjectLocation.resolve()
print(f"project root: {location.root}")
consistency = collect_consistency(location)
write_table(consistency, location, "consistency")
show(consistency, "consistency across datasets")

# %% [markdown]
# ## Consistency per metric
# `results/plots/consistency.png`: each bar is the correlation between two datasets'
# model×model similarity matrices (strict upper triangles, Pearson or Spearman). High values:
# the metric ranks model pairs the same way on both datasets. Error bars: the 95 % bootstrap
# interval over models (`ci_low`, `ci_high`); hatched bars are not resolved — the Mantel
# permutation p-value (models permuted) is ≥ 0.05 or the interval includes 0. The model pairs
# share models, so a correlation's textbook p-value would be far too small; both procedures
# resample models instead.

# %%
show(plot_consistency(consistency, location.plots))

# %% [markdown]
# ## Similarity vs performance
# Rep2Rep's question "are similar models equally good?": per dataset and metric, the correlation
# over model pairs between similarity and the absolute gap in probe accuracy (last block, mean
# over seeds). Negative values mean similar models perform alike.

# %%
relation = similarity_vs_performance(collect_similarities(location), collect_probes(location))
write_table(relation, location, "similarity_vs_performance")
show(relation, "similarity vs probe-accuracy gap")
