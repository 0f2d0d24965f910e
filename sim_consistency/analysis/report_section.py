"""The report's section on the Rep2Rep analyses: tables and figures the ``analyses`` stage wrote.

Reads ``results/analyses/<analysis>/<metric_slug>/`` (never recomputes) and words findings from
those tables; an analysis that has not run is simply absent from the section.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from sim_consistency.analysis import ANALYSES, analysis_dir
from sim_consistency.project import ProjectLocation
from sim_consistency.report import Section, _derived

__all__ = ["analyses_section"]

#: At most this many figures in the section (the HTML report embeds them).
MAX_FIGURES = 12


def _collect(location: ProjectLocation, analysis: str, csv: str) -> pd.DataFrame | None:
    """Concatenate ``csv`` of every finished folder of an analysis, with metric (and dataset)."""
    frames = []
    root = analysis_dir(location, analysis)
    for meta in sorted(root.glob("**/metadata.json")):
        path = meta.parent / csv
        if not path.is_file():
            continue
        frame = pd.read_csv(path)
        rel = meta.parent.relative_to(root).parts
        frame.insert(0, "metric", rel[0])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else None


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def _category_findings(summary: pd.DataFrame) -> list[str]:
    out = []
    for metric, part in summary.groupby("metric", sort=True):
        top = part.loc[part["mean"].idxmax()]
        low = part.loc[part["mean"].idxmin()]
        out.append(
            f"{metric}: highest mean within-category consistency {top['field']}="
            f"{top['category']} ({_fmt(top['mean'])}, {int(top['n_models'])} models), lowest "
            f"{low['field']}={low['category']} ({_fmt(low['mean'])}); over "
            f"{int(top['n_dataset_pairs'])} dataset pair(s)."
        )
    return out


def _anchor_findings(anchors: pd.DataFrame) -> list[str]:
    out = []
    for metric, part in anchors.groupby("metric", sort=True):
        means = part.groupby("anchor")["consistency"].mean().dropna()
        if means.empty:
            continue
        out.append(
            f"{metric}: anchor rows most consistent for {means.idxmax()} "
            f"({_fmt(means.max())}), least for {means.idxmin()} ({_fmt(means.min())})."
        )
    return out


def _cluster_findings(clusters: pd.DataFrame) -> list[str]:
    out = []
    for (metric, dataset), part in clusters.groupby(["metric", "dataset"], sort=True):
        groups = part.sort_values("leaf_order").groupby("cluster", sort=True)["model_id"]
        text = " | ".join("{" + ", ".join(ids) + "}" for _, ids in groups)
        out.append(f"{metric}, {dataset}: clusters {text}.")
    return out


def _gap_findings(summary: pd.DataFrame) -> list[str]:
    return [
        f"{r.metric}, {r.dataset}: Pearson r(similarity, combined-probe gap) = "
        f"{_fmt(r.pearson)}, Spearman {_fmt(r.spearman)} over {r.n_pairs} model pairs; mean "
        f"gap {100 * r.mean_gap:.2f} pp."
        for r in summary.itertuples()
    ]


def _sample_findings(convergence: pd.DataFrame) -> list[str]:
    out = []
    for metric, part in convergence.groupby("metric", sort=True):
        sub = part[part["n"] < part["n"].max()]
        if sub.empty:
            continue
        smallest, largest = sub.loc[sub["n"].idxmin()], sub.loc[sub["n"].idxmax()]
        out.append(
            f"{metric}: mean |CKA(n) − CKA(all rows)| {_fmt(smallest['mean_abs_error'])} at "
            f"n={int(smallest['n'])}, {_fmt(largest['mean_abs_error'])} at "
            f"n={int(largest['n'])} (over pairs, {int(smallest['n_seeds'])} seeds)."
        )
    return out


def _random_findings(summary: pd.DataFrame) -> list[str]:
    return [
        f"{r.metric}, k={r.k}: all-models mean consistency {_fmt(r.all_models_mean)}; "
        f"{r.n_draws} random sets span [{_fmt(r.q05)}, {_fmt(r.q95)}] (5–95%), "
        f"{100 * r.share_below_all_models:.0f}% below the all-models value."
        for r in summary.itertuples()
    ]


_PARTS: tuple[tuple[str, str, str, Callable[[pd.DataFrame], list[str]], str], ...] = (
    ("categories", "category_summary.csv", "consistency by model category", _category_findings,
     "category_consistency.png"),
    ("categories", "anchor_consistency.csv", "anchor-model consistency", _anchor_findings,
     "anchor_consistency.png"),
    ("clustering", "model_clusters.csv", "model clusters", _cluster_findings, "dendrogram_*.png"),
    ("combined_gap", "gap_summary.csv", "similarity vs combined-probe gap", _gap_findings,
     "gap_vs_similarity.png"),
    ("sample_size", "convergence.csv", "CKA sample-size convergence", _sample_findings,
     "curves.png"),
    ("random_sets", "summary.csv", "random model sets", _random_findings, "histogram.png"),
)  # fmt: skip


def analyses_section(location: ProjectLocation) -> Section | None:
    """Return the section of the analyses found under ``results/analyses/``, or None."""
    section = Section(
        "Rep2Rep analyses",
        "Consistency (correlation of two datasets' similarity matrices over model pairs) within "
        "model categories and per anchor model; hierarchical clustering of the similarity "
        "matrices (distance 1 − similarity); the gain of a probe on two models' concatenated "
        "features over the better single model against their similarity; CKA on sub-sampled "
        "rows against the number of samples; consistency over random model subsets "
        "(Ciernik et al. 2025). Computed by scripts/analyses.py.",
    )
    figures: list[Path] = []
    for analysis, csv, name, words, figure in _PARTS:
        assert analysis in ANALYSES
        table = _collect(location, analysis, csv)
        if table is None:
            continue
        section.findings += words(table)
        section.tables.append(_derived(location, name, table))
        for meta in sorted(analysis_dir(location, analysis).glob("**/metadata.json")):
            figures += sorted(meta.parent.glob(figure))[:2]
    if not section.tables:
        return None
    section.figures = figures[:MAX_FIGURES]
    return section
