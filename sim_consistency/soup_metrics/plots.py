"""Figures of the soup-metrics stage (matplotlib, Agg; each function returns a Figure).

The stage saves every figure as PNG and PDF through :func:`save_figure` (re-exported from
:mod:`sim_consistency.figures`, whose naming rule keeps every character of a model id). Figures follow the
papers they reproduce: the model-soups ID-vs-OOD scatter, the three branching-study figures, the
barrier curves, the MonoSoup per-depth statistics and the purity retention sweep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from sim_consistency.figures import save_figure  # noqa: E402

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_LINESTYLES = ("-", "--", ":", "-.")

__all__ = [
    "plot_barrier_curves",
    "plot_branching",
    "plot_id_vs_ood",
    "plot_monosoup_layers",
    "plot_retention_sweep",
    "save_figure",
]


def plot_id_vs_ood(averages: pd.DataFrame, soups: Sequence[str]) -> Figure:
    """Model-soups scatter: ID average vs OOD average per model, soups highlighted."""
    fig, ax = plt.subplots(figsize=(6, 5))
    is_soup = averages["model_id"].isin(set(soups))
    ax.scatter(
        100 * averages.loc[~is_soup, "id_avg"],
        100 * averages.loc[~is_soup, "ood_avg"],
        c="tab:gray",
        label="ingredients / other models",
    )
    ax.scatter(
        100 * averages.loc[is_soup, "id_avg"],
        100 * averages.loc[is_soup, "ood_avg"],
        c="tab:red",
        marker="*",
        s=160,
        label="soups",
    )
    for row in averages.itertuples(index=False):
        ax.annotate(row.model_id, (100 * row.id_avg, 100 * row.ood_avg), fontsize=7)
    ax.set_xlabel("ID accuracy (%)")
    ax.set_ylabel("OOD accuracy (avg over OOD datasets, %)")
    ax.set_title("Soups vs ingredients")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_branching(tables: Mapping[str, pd.DataFrame]) -> dict[str, Figure]:
    """The three figures of the branching study, keyed by file stem."""
    soups = tables["soup_results"]
    pairwise = tables["pairwise_distances"]
    figures: dict[str, Figure] = {}
    analysis_epochs = sorted(soups["analysis_epoch"].unique())

    fig, ax = plt.subplots(figsize=(7, 4.5))
    mean_distance = pairwise.groupby(["branch_epoch", "analysis_epoch"])["l2_distance"].mean()
    for epoch in analysis_epochs:
        series = mean_distance.xs(epoch, level="analysis_epoch")
        ax.plot(series.index, series.values, marker="o", label=f"after {epoch} epochs")
    ax.set_xlabel("branching epoch")
    ax.set_ylabel("average pairwise L2 distance")
    ax.set_title("Model distance vs branching point")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figures["distance_vs_branching"] = fig

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for epoch in analysis_epochs:
        part = soups[soups["analysis_epoch"] == epoch]
        axes[0].plot(
            part["branch_epoch"],
            100 * part["soup_accuracy"],
            marker="o",
            label=f"soup (after {epoch})",
        )
        axes[0].plot(
            part["branch_epoch"],
            100 * part["best_individual_accuracy"],
            marker="s",
            linestyle="--",
            alpha=0.7,
            label=f"best individual (after {epoch})",
        )
        axes[1].plot(
            part["branch_epoch"],
            100 * part["improvement_over_mean"],
            marker="o",
            label=f"after {epoch} epochs",
        )
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].set_title("Soup vs best individual")
    axes[1].axhline(0, color="black", linewidth=1, alpha=0.5)
    axes[1].set_ylabel("soup improvement over mean (pp)")
    axes[1].set_title("Soup improvement vs branching point")
    for ax in axes:
        ax.set_xlabel("branching epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figures["soup_performance_vs_branching"] = fig

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for epoch in analysis_epochs:
        part = soups[soups["analysis_epoch"] == epoch]
        axes[0].scatter(
            part["mean_l2_distance"], 100 * part["soup_accuracy"], label=f"after {epoch} epochs"
        )
        axes[1].scatter(
            part["mean_l2_distance"],
            100 * part["improvement_over_mean"],
            label=f"after {epoch} epochs",
        )
    axes[0].set_ylabel("soup test accuracy (%)")
    axes[1].set_ylabel("soup improvement over mean (pp)")
    axes[1].axhline(0, color="black", linewidth=1, alpha=0.5)
    for ax in axes:
        ax.set_xlabel("average pairwise L2 distance")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Soup vs model distance")
    figures["soup_vs_distance"] = fig
    return figures


_VALUE_LABELS = {"error": "test error (1 − top-1)", "loss": "test loss (mean cross-entropy)"}


def plot_barrier_curves(curves: pd.DataFrame, value: str = "error") -> Figure:
    """Interpolation curves ``value`` vs α: one panel per dataset, one line per model pair.

    Each line joins the α grid of one (dataset, model_a, model_b) curve in α order, so curves of
    different datasets are never joined into one line.
    """
    datasets = list(dict.fromkeys(curves["dataset"])) if "dataset" in curves else [None]
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(5.5 * len(datasets), 4.3), squeeze=False, sharey=False
    )
    for ax, dataset in zip(axes[0], datasets, strict=True):
        part = curves if dataset is None else curves[curves["dataset"] == dataset]
        for i, ((a, b), pair) in enumerate(part.groupby(["model_a", "model_b"], sort=True)):
            pair = pair.sort_values("alpha")
            ax.plot(
                pair["alpha"],
                pair[value],
                marker=_MARKERS[i % len(_MARKERS)],
                linestyle=_LINESTYLES[(i // 10) % len(_LINESTYLES)],
                label=f"A = {a}\nB = {b}",
            )
        ax.set_xlabel("α  (θ = (1−α)·θ_A + α·θ_B)")
        ax.set_ylabel(_VALUE_LABELS.get(value, value))
        ax.set_title(f"{value} along the linear path — {dataset}" if dataset else value, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return fig


def plot_monosoup_layers(layers: pd.DataFrame) -> Figure:
    """MonoSoup per-depth statistics: k / effective rank and λ_high / λ_low of edited tensors."""
    edited = layers[layers["edited"]].reset_index(drop=True)
    depth = np.arange(len(edited))
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    axes[0].plot(depth, edited["k"], marker=".", label="k (kept directions)")
    axes[0].plot(depth, edited["erank"], marker=".", label="effective rank")
    axes[0].set_ylabel("rank")
    axes[0].legend(fontsize=8)
    axes[1].plot(depth, edited["lambda_high"], marker=".", label="λ_high")
    axes[1].plot(depth, edited["lambda_low"], marker=".", label="λ_low")
    axes[1].set_ylabel("mixing weight")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_xlabel("edited tensor (forward order)")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("MonoSoup per-layer statistics")
    return fig


def plot_retention_sweep(sweep: pd.DataFrame, metric: str = "top1") -> Figure:
    """Metric vs number of kept dimensions, high-purity vs low-purity selections."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for purity, part in sweep.groupby("purity", sort=True):
        part = part.sort_values("k")
        ax.plot(part["k"], part[metric], marker="o", label=f"{purity}-purity dimensions")
    ax.set_xlabel("dimensions kept (k)")
    ax.set_ylabel(metric)
    ax.set_title("Neuron retention sweep")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
