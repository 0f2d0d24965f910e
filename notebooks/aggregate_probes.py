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
# hyper-parameter setting), writes the tidy union to `results/aggregated/probes.csv`, a
# model × dataset summary (mean ± std over seeds of the last block's top-1) to
# `results/aggregated/probe_summary.csv`, and the accuracy-vs-depth figure.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from sim_consistency.aggregate import collect_probes, write_table
from sim_consistency.project import ProjectLocation

location = ProjectLocation.resolve()
location.plots.mkdir(parents=True, exist_ok=True)
probes = collect_probes(location)
write_table(probes, location, "probes")
probe_rows = probes[probes["kind"] == "probe"]
last = probe_rows[
    probe_rows["block_index"]
    == probe_rows.groupby(["dataset", "model_id"])["block_index"].transform("max")
]
summary = (
    last.groupby(["dataset", "model_id"])["top1"]
    .agg(["mean", "std", "count"])
    .reset_index()
    .rename(columns={"mean": "top1_mean", "std": "top1_std", "count": "n_seeds"})
)
write_table(summary, location, "probe_summary")
summary

# %% [markdown]
# ## Accuracy vs depth
# Test top-1 of a linear probe on each block's features, against the block's relative depth
# (1 = last block). Curves that rise late mean the class information is formed late in the
# network; a soup that tracks its ingredients' curve keeps their features.

# %%
for dataset, part in probe_rows.groupby("dataset"):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model_id, curve in part.groupby("model_id"):
        curve = curve.groupby("depth_fraction")["top1"].mean()
        ax.plot(curve.index, 100 * curve.values, marker="o", label=model_id)
    ax.set_xlabel("relative depth of the block")
    ax.set_ylabel("probe top-1 (%)")
    ax.set_title(f"Accuracy vs depth — {dataset}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    slug = dataset.replace("/", "_")
    fig.savefig(
        location.plots / f"probe_accuracy_vs_depth_{slug}.png", dpi=120, bbox_inches="tight"
    )
    plt.close(fig)
sorted(p.name for p in location.plots.glob("probe_*.png"))
