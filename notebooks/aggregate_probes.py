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
# # Linear probes
#
# Reads every `results/linear_probe/single_model/…/results.csv` (one per model × dataset ×
# hyper-parameter setting) and writes the tidy union to `results/aggregated/probes.csv` and a
# model × dataset summary (mean ± std over seeds of the last block's top-1) to
# `results/aggregated/probe_summary.csv`.

# %%
from sim_consistency.aggregate import (
    collect_probes,
    plot_accuracy_vs_depth,
    probe_summary,
    write_table,
)
from sim_consistency.project import ProjectLocation

location = ProjectLocation.resolve()
probes = collect_probes(location)
write_table(probes, location, "probes")
summary = probe_summary(probes)
write_table(summary, location, "probe_summary")
summary

# %% [markdown]
# ## Accuracy vs depth
# `results/plots/probe_accuracy_vs_depth_<dataset>.png`: test top-1 of a linear probe on each
# block's features against the block's relative depth (1 = last block). Curves that rise late
# mean class information forms late in the network; a soup that tracks its ingredients' curve
# keeps their features.

# %%
[p.name for p in plot_accuracy_vs_depth(probes, location.plots)]
