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
# # Rep2Rep consistency, and similarity vs performance
#
# Reads the consistency tables of `results/consistency/` (do similarity rankings of models hold
# from one dataset to another?) and relates each model pair's similarity to its probe-accuracy
# gap, per dataset (Rep2Rep's "does similar mean equally good?"). Tables go to
# `results/aggregated/`, figures to `results/plots/`.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from sim_consistency.aggregate import (
    collect_consistency,
    collect_probes,
    collect_similarities,
    similarity_vs_performance,
    write_table,
)
from sim_consistency.project import ProjectLocation

location = ProjectLocation.resolve()
location.plots.mkdir(parents=True, exist_ok=True)
consistency = collect_consistency(location)
write_table(consistency, location, "consistency")
consistency

# %% [markdown]
# ## Consistency per metric
# Each bar is the correlation between two datasets' model×model similarity matrices (strict
# upper triangles). High values: the metric ranks model pairs the same way on both datasets.

# %%
fig, ax = plt.subplots(figsize=(8, 4))
labels = [
    f"{r.metric}\n{r.dataset_a.split('_')[-1]}–{r.dataset_b.split('_')[-1]} ({r.method})"
    for r in consistency.itertuples(index=False)
]
ax.bar(range(len(consistency)), consistency["consistency"])
ax.set_xticks(range(len(consistency)), labels, rotation=90, fontsize=6)
ax.set_ylabel("correlation across datasets")
ax.set_ylim(-1, 1)
ax.axhline(0, color="black", linewidth=1)
ax.set_title("Rep2Rep consistency")
fig.savefig(location.plots / "consistency.png", dpi=120, bbox_inches="tight")
plt.close(fig)

# %% [markdown]
# ## Similarity vs performance
# Per dataset and metric: correlation over model pairs between similarity and the absolute gap
# in probe accuracy. Negative values mean similar models perform alike.

# %%
relation = similarity_vs_performance(collect_similarities(location), collect_probes(location))
write_table(relation, location, "similarity_vs_performance")
relation
