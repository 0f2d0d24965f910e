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
# # Linear probes
#
# Reads every `results/linear_probe/single_model/…/results.csv` (one per model × dataset ×
# hyper-parameter setting) and writes the tidy union to `results/aggregated/probes.csv` and a
# model × dataset summary (mean ± std over seeds of the last block's top-1 — training
# randomness — and `top1_ci_halfwidth`, the mean half-width of Wilson's 95 % interval over test
# rows — test-set sampling) to `results/aggregated/probe_summary.csv`. The root is found as by every stage (`SIMC_ROOT`, else
# `project_root` in this checkout).

# %%
from sim_consistency.aggregate import (
    collect_probes,
    plot_accuracy_vs_depth,
    probe_summary,
    write_table,
)
from sim_consistency.display import show
from sim_consistency.project import ProjectLocation

location = ProjectLocation.resolve()
print(f"project root: {location.root}")
probes = collect_probes(location)
write_table(probes, location, "probes")
summary = probe_summary(probes)
write_table(summary, location, "probe_summary")
show(summary, "last-block probe top-1, mean ± std over seeds")

# %% [markdown]
# ## Accuracy vs depth
# `results/plots/probe_accuracy_vs_depth_<dataset>.png`: test top-1 of a linear probe on each
# block's features against the block's relative depth (1 = last block), one panel per model
# group. With probes of the last block only, each model is one point at depth 1. Error bars
# span the lowest to the highest Wilson 95 % bound over seeds.

# %%
show(plot_accuracy_vs_depth(probes, location.plots))
