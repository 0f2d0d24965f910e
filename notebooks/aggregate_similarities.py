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
# comes from `SIMC_ROOT`, else `./project_root`, as for every stage), writes one tidy table to
# `results/aggregated/similarities.csv` and draws one heatmap per dataset and metric to
# `results/plots/`.

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from sim_consistency.aggregate import collect_similarities, write_table
from sim_consistency.project import ProjectLocation

location = ProjectLocation.resolve()
location.plots.mkdir(parents=True, exist_ok=True)
similarities = collect_similarities(location)
write_table(similarities, location, "similarities")
similarities.head()

# %% [markdown]
# ## Heatmaps
# One panel per dataset × metric: rows and columns are models in matrix order, colour is the
# similarity (CKA, RSA or mutual k-NN, as named by the metric slug), on a fixed 0–1 scale so
# panels compare. A block of bright cells is a family of models that represent the data alike.

# %%
for (dataset, metric), part in similarities.groupby(["dataset_slug", "metric"]):
    ids = list(dict.fromkeys([*part["model_a"], *part["model_b"]]))
    matrix = pd.DataFrame(1.0, index=ids, columns=ids)
    for r in part.itertuples(index=False):
        matrix.loc[r.model_a, r.model_b] = matrix.loc[r.model_b, r.model_a] = r.similarity
    fig, ax = plt.subplots(figsize=(1 + 0.5 * len(ids), 0.8 + 0.5 * len(ids)))
    im = ax.imshow(matrix.to_numpy(), cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(ids)), ids, rotation=90, fontsize=7)
    ax.set_yticks(range(len(ids)), ids, fontsize=7)
    ax.set_title(f"{dataset}\n{metric}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.savefig(location.plots / f"similarity_{dataset}_{metric}.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
sorted(p.name for p in location.plots.glob("similarity_*.png"))
