"""Figures of the soup-metrics stage (pyplot-free matplotlib; each function returns a Figure).

The stage saves every figure as PNG and PDF through :func:`save_figure` (re-exported from
:mod:`sim_consistency.figures`, whose naming rule keeps every character of a model id). Figures follow the
papers they reproduce: the model-soups ID-vs-OOD scatter, the three branching-study figures, the
barrier curves, the MonoSoup per-depth statistics and the purity retention sweep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sim_consistency.figures import save_figure, series_style, subplots

__all__ = [
    "plot_barrier_curves",
    "plot_branching",
    "plot_id_vs_ood",
    "plot_monosoup_layers",
    "plot_retention_sweep",
    "save_figure",
]


def label_points_in_a_column(ax, xs, ys, labels, *, fontsize: float = 7) -> None:
    """Label scatter points in a column right of the axes, ordered by y, with leader lines.

    Labels never overlap (one row each, evenly spaced over the axes' height) however close the
    points are; each label is joined to its point by a thin line.
    """
    order = np.argsort(np.asarray(ys, dtype=float), kind="stable")
    n = len(order)
    for rank, i in enumerate(order):
        y_label = (rank + 0.5) / n if n else 0.5
        ax.annotate(
            labels[i],
            xy=(xs[i], ys[i]),
            xycoords="data",
            xytext=(1.04, y_label),
            textcoords="axes fraction",
            fontsize=fontsize,
            va="center",
            arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.5},
        )


def plot_id_vs_ood(
    averages: pd.DataFrame,
    soups: Sequence[str],
    *,
    id_datasets: Sequence[str] = (),
    ood_datasets: Sequence[str] = (),
) -> Figure:
    """Model-soups scatter: ID average vs OOD average per model, soups highlighted.

    Every point is labelled in a column beside the axes (:func:`label_points_in_a_column`), so
    labels of nearby models do not overlap.
    """
    n = len(averages)
    fig, ax = subplots(figsize=(7.5, max(4.5, 0.16 * n + 1.5)))
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
    label_points_in_a_column(
        ax,
        list(100 * averages["id_avg"]),
        list(100 * averages["ood_avg"]),
        list(averages["model_id"]),
        fontsize=6 if n > 20 else 7,
    )
    ids = ", ".join(id_datasets) or "ID datasets"
    oods = ", ".join(ood_datasets) or "OOD datasets"
    ax.set_xlabel(f"ID accuracy (%, {ids})")
    ax.set_ylabel(f"OOD accuracy (%, {oods})")
    ax.set_title(f"Test top-1 of every model: {ids} vs {oods}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def plot_branching(
    tables: Mapping[str, pd.DataFrame], *, group: str | None = None, dataset: str | None = None
) -> dict[str, Figure]:
    """The three figures of the branching study, keyed by file stem; titles name the run group
    and dataset."""
    where = ", ".join(x for x in (f"run group {group}" if group else "", dataset or "") if x)
    suffix = f" — {where}" if where else ""
    soups = tables["soup_results"]
    pairwise = tables["pairwise_distances"]
    figures: dict[str, Figure] = {}
    analysis_epochs = sorted(soups["analysis_epoch"].unique())

    fig, ax = subplots(figsize=(7, 4.5))
    mean_distance = pairwise.groupby(["branch_epoch", "analysis_epoch"])["l2_distance"].mean()
    for epoch in analysis_epochs:
        series = mean_distance.xs(epoch, level="analysis_epoch")
        ax.plot(series.index, series.values, marker="o", label=f"after {epoch} epochs")
    ax.set_xlabel("branching epoch")
    ax.set_ylabel("average pairwise L2 distance")
    ax.set_title(f"Model distance vs branching point{suffix}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figures["distance_vs_branching"] = fig

    fig, axes = subplots(1, 2, figsize=(13, 4.5))
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
    axes[0].set_title(f"Soup vs best individual{suffix}", fontsize=9)
    axes[1].axhline(0, color="black", linewidth=1, alpha=0.5)
    axes[1].set_ylabel("soup improvement over mean (pp)")
    axes[1].set_title(f"Soup improvement vs branching point{suffix}", fontsize=9)
    for ax in axes:
        ax.set_xlabel("branching epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figures["soup_performance_vs_branching"] = fig

    fig, axes = subplots(1, 2, figsize=(13, 4.5))
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
    fig.suptitle(f"Soup vs model distance{suffix}")
    figures["soup_vs_distance"] = fig
    return figures


_VALUE_LABELS = {"error": "test error (1 − top-1)", "loss": "test loss (mean cross-entropy)"}


def plot_barrier_curves(curves: pd.DataFrame, value: str = "error") -> Figure:
    """Interpolation curves ``value`` vs α: one panel per dataset, one line per model pair.

    Each line joins the α grid of one (dataset, model_a, model_b) curve in α order, so curves of
    different datasets are never joined into one line.
    """
    datasets = list(dict.fromkeys(curves["dataset"])) if "dataset" in curves else [None]
    fig, axes = subplots(
        1, len(datasets), figsize=(5.5 * len(datasets), 4.3), squeeze=False, sharey=False
    )
    for ax, dataset in zip(axes[0], datasets, strict=True):
        part = curves if dataset is None else curves[curves["dataset"] == dataset]
        for i, ((a, b), pair) in enumerate(part.groupby(["model_a", "model_b"], sort=True)):
            pair = pair.sort_values("alpha")
            ax.plot(
                pair["alpha"],
                pair[value],
                label=f"A = {a}\nB = {b}",
                **series_style(i),
            )
        ax.set_xlabel("α  (θ = (1−α)·θ_A + α·θ_B)")
        ax.set_ylabel(_VALUE_LABELS.get(value, value))
        ax.set_title(f"{value} along the linear path — {dataset}" if dataset else value, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return fig


def plot_monosoup_layers(layers: pd.DataFrame, *, title: str = "") -> Figure:
    """MonoSoup per-depth statistics: k / effective rank and λ_high / λ_low of edited tensors.

    ``title`` names the variant (model id, method, base → fine-tuned).
    """
    edited = layers[layers["edited"]].reset_index(drop=True)
    depth = np.arange(len(edited))
    fig, axes = subplots(2, 1, figsize=(9, 6), sharex=True)
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
    fig.suptitle(f"MonoSoup per-layer statistics{': ' + title if title else ''}", fontsize=10)
    return fig


def plot_retention_sweep(sweep: pd.DataFrame, metric: str = "top1", *, title: str = "") -> Figure:
    """Metric vs number of kept dimensions, high-purity vs low-purity selections.

    ``title`` names what was swept (model, block, dataset).
    """
    fig, ax = subplots(figsize=(6.5, 4.5))
    for purity, part in sweep.groupby("purity", sort=True):
        part = part.sort_values("k")
        ax.plot(part["k"], part[metric], marker="o", label=f"{purity}-purity dimensions")
    ax.set_xlabel("dimensions kept (k)")
    ax.set_ylabel(metric)
    ax.set_title(f"Retention sweep{': ' + title if title else ''}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
