"""Collect the stages' results into tidy tables (what the aggregation notebooks and report read).

Each ``collect_*`` function walks one results folder of a project root and returns one tidy
DataFrame (or a dict of them); nothing here recomputes a metric. Every function raises
:class:`~sim_consistency.errors.MissingInputError` naming the folder when there is nothing to
collect, so a notebook run before its stage says which stage to run.

* :func:`collect_similarities` — ``model_similarities/<dataset>/<metric>/`` → one row per
  (dataset, metric, model_a, model_b), upper triangle (a < b in matrix order).
* :func:`collect_probes` — ``results/linear_probe/single_model/**/results.csv``.
* :func:`collect_layer_cka` — ``results/layer_cka/<dataset>/{layer_cka,diagonal_profile}.csv``.
* :func:`collect_consistency` — ``results/consistency/<metric>/<restriction>/consistency_*.csv``
  → long format (metric, restriction, method, dataset_a, dataset_b, value), with the Mantel
  p-value, bootstrap interval and ``resolved`` of ``uncertainty_<method>.csv`` where the stage
  wrote them (NaN otherwise).
* :func:`collect_soup_metrics` — the CSV tables of ``results/soup_metrics/``.
* :func:`similarity_vs_performance` — Rep2Rep's relation between similarity and performance:
  per dataset and metric, the Pearson/Spearman correlation over model pairs between the pair's
  similarity and its absolute probe-accuracy gap.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sim_consistency.errors import MissingInputError
from sim_consistency.figures import (
    WIDE_INTERVAL,
    hatch_wide_cells,
    save_figure,
    series_style,
    subplots,
)
from sim_consistency.io import atomic_write_text
from sim_consistency.project import ProjectLocation

__all__ = [
    "plot_accuracy_vs_depth",
    "plot_consistency",
    "plot_similarity_heatmaps",
    "plot_soup_improvement",
    "probe_summary",
    "write_aggregates",
    "collect_consistency",
    "collect_layer_cka",
    "collect_probes",
    "collect_similarities",
    "collect_soup_metrics",
    "model_group",
    "similarity_vs_performance",
    "n_test_images",
    "write_table",
]


def _none_found(folder: Path, what: str, stage: str) -> MissingInputError:
    return MissingInputError(f"{folder}: no {what} found; run scripts/{stage}.py first.")


_NO_INTERVAL = {"se": np.nan, "ci_low": np.nan, "ci_high": np.nan}


def _similarity_intervals(path: Path) -> dict[tuple[str, str], dict[str, float]]:
    """Return ``{(model_a, model_b): {se, ci_low, ci_high}}`` of a ``--ci`` run, else {}."""
    if not path.is_file():
        return {}
    table = pd.read_csv(path)
    return {
        (r.model_a, r.model_b): {"se": r.se, "ci_low": r.ci_low, "ci_high": r.ci_high}
        for r in table.itertuples(index=False)
    }


def collect_similarities(location: ProjectLocation) -> pd.DataFrame:
    """Return every model×model similarity as tidy rows (upper triangle, matrix order).

    Columns ``dataset, dataset_slug, metric, model_a, model_b, similarity, se, ci_low,
    ci_high``; the interval columns come from ``similarity_ci.csv`` (``--ci``), NaN without.
    """
    rows = []
    for csv in sorted(location.model_similarities.glob("*/*/similarity_matrix.csv")):
        metadata_file = csv.parent / "metadata.json"
        if not metadata_file.is_file():  # an unfinished folder: metadata.json is written last
            continue
        metadata = json.loads(metadata_file.read_text())
        matrix = pd.read_csv(csv, index_col="model_id")
        intervals = _similarity_intervals(csv.parent / "similarity_ci.csv")
        ids = list(matrix.index)
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                rows.append(
                    {
                        "dataset": metadata.get("dataset", csv.parent.parent.name),
                        "dataset_slug": csv.parent.parent.name,
                        "metric": csv.parent.name,
                        "model_a": a,
                        "model_b": b,
                        "similarity": float(matrix.loc[a, b]),
                        **intervals.get((a, b), _NO_INTERVAL),
                    }
                )
    if not rows:
        raise _none_found(
            location.model_similarities, "similarity matrices", "distance_matrix_computation"
        )
    return pd.DataFrame(rows)


def collect_probes(location: ProjectLocation) -> pd.DataFrame:
    """Return every linear-probe / head result row (the stage's tidy ``results.csv`` files)."""
    folder = location.linear_probe / "single_model"
    frames = [
        pd.read_csv(csv)
        for csv in sorted(folder.glob("*/*/*/results.csv"))
        if (csv.parent / "results.json").is_file()  # results.json marks completion
    ]
    if not frames:
        raise _none_found(folder, "probe results", "single_model_evaluation")
    return pd.concat(frames, ignore_index=True)


def collect_layer_cka(location: ProjectLocation) -> dict[str, pd.DataFrame]:
    """Return ``{"grids": layer_cka rows, "diagonal": diagonal-profile rows}`` of every dataset."""
    out: dict[str, list[pd.DataFrame]] = {"grids": [], "diagonal": []}
    for folder in sorted(p for p in location.layer_cka.glob("*") if p.is_dir()):
        if not (folder / "metadata.json").is_file():
            continue
        for key, name in (("grids", "layer_cka.csv"), ("diagonal", "diagonal_profile.csv")):
            if (folder / name).is_file():
                out[key].append(pd.read_csv(folder / name).assign(dataset_slug=folder.name))
    if not out["grids"]:
        raise _none_found(location.layer_cka, "layer CKA grids", "layer_cka")
    return {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in out.items()}


#: Columns of ``uncertainty_<method>.csv`` carried into the long consistency table.
UNCERTAINTY_COLUMNS = ("p_value", "ci_low", "ci_high", "tested", "resolved")


def _uncertainty_rows(path: Path) -> dict[tuple[str, str], dict[str, object]]:
    if not path.is_file():
        return {}
    frame = pd.read_csv(path)
    return {
        (str(r["dataset_a"]), str(r["dataset_b"])): {c: r[c] for c in UNCERTAINTY_COLUMNS}
        for r in frame.to_dict("records")
    }


def collect_consistency(location: ProjectLocation) -> pd.DataFrame:
    """Return every D×D consistency table in long format (off-diagonal entries, a < b).

    Columns ``metric, restriction, method, dataset_a, dataset_b, consistency, p_value, ci_low,
    ci_high, tested, resolved`` (NaN / False / None where the stage ran without them).
    """
    rows = []
    absent = dict.fromkeys(UNCERTAINTY_COLUMNS, float("nan")) | {"tested": False, "resolved": None}
    for csv in sorted(location.consistency.glob("*/*/consistency_*.csv")):
        if not (csv.parent / "metadata.json").is_file():
            continue
        table = pd.read_csv(csv, index_col=0)
        method = csv.stem.removeprefix("consistency_")
        tests = _uncertainty_rows(csv.parent / f"uncertainty_{method}.csv")
        names = list(table.index)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                rows.append(
                    {
                        "metric": csv.parent.parent.name,
                        "restriction": csv.parent.name,
                        "method": method,
                        "dataset_a": a,
                        "dataset_b": b,
                        "consistency": float(table.loc[a, b]),
                        **tests.get((a, b), absent),
                    }
                )
    if not rows:
        raise _none_found(location.consistency, "consistency tables", "consistency")
    return pd.DataFrame(rows)


def collect_soup_metrics(location: ProjectLocation) -> dict[str, pd.DataFrame]:
    """Return ``{table_name: DataFrame}`` for every CSV table of ``results/soup_metrics/``."""
    folder = location.soup_metrics
    tables = {csv.stem: pd.read_csv(csv) for csv in sorted(folder.glob("*.csv"))}
    if not tables:
        raise _none_found(folder, "soup-metrics tables", "soup_metrics")
    return tables


def similarity_vs_performance(
    similarities: pd.DataFrame, probes: pd.DataFrame, *, accuracy: str = "top1"
) -> pd.DataFrame:
    """Correlate each model pair's similarity with its absolute accuracy gap (Rep2Rep).

    Accuracy per (dataset, model) is the mean over seeds of the last block's probe
    (``kind == "probe"``, highest ``block_index``). Returns one row per (dataset, metric) with
    ``n_pairs``, ``pearson`` and ``spearman`` (NaN with fewer than 3 pairs or a constant input).
    """
    from scipy.stats import pearsonr, spearmanr

    acc = _last_block_rows(probes).groupby(["dataset", "model_id"])[accuracy].mean()
    rows = []
    for (dataset, metric), part in similarities.groupby(["dataset", "metric"], sort=True):
        gaps, sims = [], []
        for r in part.itertuples(index=False):
            if (dataset, r.model_a) in acc.index and (dataset, r.model_b) in acc.index:
                gaps.append(abs(acc[(dataset, r.model_a)] - acc[(dataset, r.model_b)]))
                sims.append(r.similarity)
        gaps_a, sims_a = np.asarray(gaps, dtype=float), np.asarray(sims, dtype=float)
        ok = len(gaps_a) >= 3 and np.ptp(gaps_a) > 0 and np.ptp(sims_a) > 0
        rows.append(
            {
                "dataset": dataset,
                "metric": metric,
                "n_pairs": len(gaps_a),
                "pearson": float(pearsonr(sims_a, gaps_a).statistic) if ok else float("nan"),
                "spearman": float(spearmanr(sims_a, gaps_a).statistic) if ok else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def write_table(table: pd.DataFrame, location: ProjectLocation, name: str) -> Path:
    """Write ``table`` to ``results/aggregated/<name>.csv`` atomically and return the path."""
    return atomic_write_text(location.aggregated / f"{name}.csv", table.to_csv(index=False))


# -- summaries and figures (shared by the notebooks and the demo report) -----------------------


def _last_block_rows(probes: pd.DataFrame) -> pd.DataFrame:
    rows = probes[probes["kind"] == "probe"]
    deepest = rows.groupby(["dataset", "model_id"])["block_index"].transform("max")
    return rows[rows["block_index"] == deepest]


def probe_summary(probes: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds of the last block's probe top-1, per dataset and model.

    ``top1_std`` is the spread over probe seeds (training randomness); with the stage's Wilson
    intervals, ``top1_ci_halfwidth`` is the mean over seeds of their half-widths (test-set
    sampling), so both sources of uncertainty stand side by side.
    """
    rows = _last_block_rows(probes)
    summary = (
        rows.groupby(["dataset", "model_id"])["top1"]
        .agg(["mean", "std", "count"])
        .reset_index()
        .rename(columns={"mean": "top1_mean", "std": "top1_std", "count": "n_seeds"})
    )
    if {"top1_ci_low", "top1_ci_high"} <= set(rows.columns):
        half = (rows["top1_ci_high"] - rows["top1_ci_low"]) / 2
        width = half.groupby([rows["dataset"], rows["model_id"]]).mean()
        summary["top1_ci_halfwidth"] = [
            width.get((d, m), np.nan)
            for d, m in zip(summary["dataset"], summary["model_id"], strict=True)
        ]
    return summary


#: The overview figures are written as PNG only (the report embeds them).
PNG = ("png",)


def plot_similarity_heatmaps(similarities: pd.DataFrame, plots: Path) -> list[Path]:
    """One heatmap per dataset × metric → ``similarity_<dataset>_<metric>.png``.

    The colour scale spans the off-diagonal values of each figure (stated on the colour bar):
    similarities of related models cluster near 1, where a fixed 0–1 scale shows one colour.
    Where the rows have intervals (``--ci``), cells whose 95 % interval is wider than
    ±:data:`~sim_consistency.figures.WIDE_INTERVAL` (or that have none) are hatched and the
    title gives the median half-width.
    """
    paths = []
    for (dataset, metric), part in similarities.groupby(["dataset_slug", "metric"]):
        ids = list(dict.fromkeys([*part["model_a"], *part["model_b"]]))
        matrix = pd.DataFrame(np.nan, index=ids, columns=ids)
        for r in part.itertuples(index=False):
            matrix.loc[r.model_a, r.model_b] = matrix.loc[r.model_b, r.model_a] = r.similarity
        values = part["similarity"].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        hi = hi if hi > lo else lo + 1e-6
        size = 1 + 0.3 * len(ids)
        fig, ax = subplots(figsize=(size + 1.5, size))
        image = ax.imshow(matrix.to_numpy(), cmap="viridis", vmin=lo, vmax=hi)
        ax.set_xticks(range(len(ids)), ids, rotation=90, fontsize=6)
        ax.set_yticks(range(len(ids)), ids, fontsize=6)
        name = str(part["dataset"].iloc[0]) if "dataset" in part else dataset
        ax.set_title(
            f"{metric} between every pair of models — {name}\n"
            f"colour scale {lo:.3f}–{hi:.3f} (the off-diagonal range; diagonal left blank)",
            fontsize=8,
        )
        fig.colorbar(image, ax=ax, fraction=0.046)
        if "ci_low" in part and part["ci_low"].notna().any():
            half = pd.DataFrame(np.nan, index=ids, columns=ids)
            for r in part.itertuples(index=False):
                half.loc[r.model_a, r.model_b] = half.loc[r.model_b, r.model_a] = (
                    r.ci_high - r.ci_low
                ) / 2
            widths = half.to_numpy(dtype=float, copy=True)
            np.fill_diagonal(widths, 0.0)  # the diagonal is left blank, never hatched
            hatch_wide_cells(ax, widths, WIDE_INTERVAL)
            ax.set_title(
                ax.get_title() + f"\nhatched: 95% CI half-width > {WIDE_INTERVAL:g} or none "
                f"(median half-width {np.nanmedian((part.ci_high - part.ci_low) / 2):.3f})",
                fontsize=8,
            )
        paths.append(
            save_figure(fig, plots / f"similarity_{dataset}_{metric}", formats=PNG, dpi=120)[0]
        )
    return paths


def model_group(model_id: str) -> str:
    """Return a model's group for faceting: the id's prefix before the first ``_``."""
    return model_id.split("_", 1)[0]


def plot_accuracy_vs_depth(probes: pd.DataFrame, plots: Path) -> list[Path]:
    """Probe top-1 vs relative block depth → ``probe_accuracy_vs_depth_<dataset>.png``.

    One figure per dataset, one panel per model group (:func:`model_group`), each model a line
    with its own colour/line style/marker, mean over seeds. Error bars span, over seeds, the
    lowest to the highest Wilson 95 % bound (``top1_ci_low``/``top1_ci_high``: test-set sampling
    and seed spread together), or min–max over seeds for results without intervals.
    """
    paths = []
    with_ci = {"top1_ci_low", "top1_ci_high"} <= set(probes.columns) and bool(
        probes["top1_ci_low"].notna().all()
    )
    for dataset, part in probes[probes["kind"] == "probe"].groupby("dataset"):
        groups = sorted({model_group(m) for m in part["model_id"]})
        fig, axes = subplots(
            1, len(groups), figsize=(6.5 * len(groups), 5), squeeze=False, sharey=True
        )
        for ax, group in zip(axes[0], groups, strict=True):
            members = sorted(m for m in part["model_id"].unique() if model_group(m) == group)
            for i, model_id in enumerate(members):
                rows = part[part["model_id"] == model_id].groupby("depth_fraction")
                mean, low, high = rows["top1"].mean(), rows["top1"].min(), rows["top1"].max()
                if with_ci:
                    low, high = rows["top1_ci_low"].min(), rows["top1_ci_high"].max()
                ax.errorbar(
                    mean.index,
                    100 * mean.values,
                    yerr=[100 * (mean - low).values, 100 * (high - mean).values],
                    label=model_id,
                    capsize=2,
                    markersize=4,
                    **series_style(i),
                )
            ax.set_xlabel("relative depth of the block (1 = last)")
            ax.set_title(f"group {group} ({len(members)} models)", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=5.5, ncol=2, loc="best")
        axes[0][0].set_ylabel("probe test top-1 (%), mean over seeds")
        n_seeds = (
            int(part.groupby(["model_id", "depth_fraction"])["seed"].nunique().max())
            if "seed" in part
            else 1
        )
        fig.suptitle(
            f"Linear-probe accuracy vs depth — {dataset} ({n_seeds} seed(s); bars: "
            + (
                "Wilson 95% test-set interval, lowest–highest bound over seeds)"
                if with_ci
                else "min–max over seeds)"
            ),  # fmt: skip
            fontsize=10,
        )
        slug = dataset.replace("/", "_")
        paths.append(
            save_figure(fig, plots / f"probe_accuracy_vs_depth_{slug}", formats=PNG, dpi=120)[0]
        )
    return paths


def plot_soup_improvement(table: pd.DataFrame, plots: Path, *, n_test: int | None = None) -> Path:
    """Bars of each soup's improvement over the mean and the best ingredient, per dataset.

    With ``n_test`` (test images), dotted lines mark ± one image, the smallest accuracy
    difference the test set can show. Where the table has the stage's paired bootstrap
    intervals (``over_mean_ci_*``, ``over_best_ci_*``) they are error bars.
    """
    labels = [
        f"{s}\n{d.split('/')[-1]}" for s, d in zip(table["soup_id"], table["dataset"], strict=True)
    ]
    x = np.arange(len(table))
    fig, ax = subplots(figsize=(max(5, 0.9 * len(table)), 4))
    for offset, what in ((-0.2, "mean"), (0.2, "best")):
        value = 100 * table[f"improvement_over_{what}"].to_numpy(dtype=float)
        bounds = (f"over_{what}_ci_low", f"over_{what}_ci_high")
        yerr = None
        if set(bounds) <= set(table.columns):
            low, high = (100 * table[b].to_numpy(dtype=float) for b in bounds)
            yerr = [value - low, high - value]
        ax.bar(x + offset, value, width=0.4, yerr=yerr, capsize=2, label=f"vs {what} ingredient")
    ax.axhline(0, color="black", linewidth=1)
    if n_test:
        for sign in (1, -1):
            ax.axhline(
                sign * 100 / n_test,
                color="0.4",
                linestyle=":",
                linewidth=1,
                label=f"± one test image ({100 / n_test:.2f} pp, n = {n_test})"
                if sign > 0
                else None,
            )
    ax.set_xticks(x, labels, fontsize=6, rotation=90)
    ax.set_ylabel(
        "soup − ingredient test top-1 (pp)"
        + ("\nbars: paired 95% bootstrap interval" if "over_best_ci_low" in table else "")
    )
    ax.set_title(
        "Each soup's test top-1 minus its ingredients' mean and best, per dataset", fontsize=9
    )
    ax.legend(fontsize=7)
    return save_figure(fig, plots / "soup_improvement", formats=PNG, dpi=120)[0]


def plot_consistency(consistency: pd.DataFrame, plots: Path) -> Path:
    """Bars of every cross-dataset consistency value (metric × dataset pair × method).

    Where the table has bootstrap intervals (``ci_low``, ``ci_high``) they are error bars, and
    bars not ``resolved`` (Mantel p ≥ 0.05 or an interval including 0) are hatched.
    """
    labels = [
        f"{r.metric} | {r.restriction}\n{r.dataset_a} vs {r.dataset_b} ({r.method})"
        for r in consistency.itertuples(index=False)
    ]
    fig, ax = subplots(figsize=(max(6, 0.6 * len(consistency)), 4.5))
    values = consistency["consistency"].to_numpy(dtype=float)
    bars = ax.bar(range(len(consistency)), values)
    if {"ci_low", "ci_high", "resolved"} <= set(consistency.columns):
        low = consistency["ci_low"].to_numpy(dtype=float)
        high = consistency["ci_high"].to_numpy(dtype=float)
        has = np.isfinite(low) & np.isfinite(high)
        if has.any():
            ax.errorbar(
                np.arange(len(values))[has],
                values[has],
                yerr=[values[has] - low[has], high[has] - values[has]],
                fmt="none",
                ecolor="black",
                capsize=2,
                label="95% bootstrap-over-models interval",
            )
        tested = consistency.get("tested", pd.Series(True, index=consistency.index))
        unresolved = consistency["resolved"].map(lambda v: str(v) == "False") & tested.map(
            lambda v: str(v) == "True"
        )
        for bar, flag in zip(bars, unresolved, strict=True):
            if flag:
                bar.set_hatch("///")
                bar.set_edgecolor("white")
        if unresolved.any():
            bars[int(np.argmax(unresolved.to_numpy()))].set_label(
                "hatched: Mantel p ≥ 0.05 or interval includes 0"
            )
        if has.any() or unresolved.any():
            ax.legend(fontsize=7, loc="lower right")
    ax.set_xticks(range(len(consistency)), labels, rotation=90, fontsize=6)
    ax.set_ylabel("correlation of the two datasets' model×model matrices")
    ax.set_ylim(-1, 1)
    ax.axhline(0, color="black", linewidth=1)
    ax.set_title(
        "Rep2Rep consistency: per metric, how alike two datasets rank the model pairs", fontsize=9
    )
    return save_figure(fig, plots / "consistency", formats=PNG, dpi=120)[0]


def n_test_images(location: ProjectLocation) -> int | None:
    """Return the number of test images behind ``soup_metrics/accuracy.csv`` (None if unknown)."""
    path = location.soup_metrics / "accuracy.csv"
    if not path.is_file():
        return None
    accuracy = pd.read_csv(path)
    if "n_samples" not in accuracy or accuracy.empty:
        return None
    id_rows = accuracy[~accuracy["is_ood"]] if "is_ood" in accuracy else accuracy
    return int((id_rows if len(id_rows) else accuracy)["n_samples"].min())


def write_aggregates(location: ProjectLocation) -> list[Path]:
    """Write every aggregated table and figure whose inputs exist; return what was written.

    What the four notebooks do, in one call (the demo runs it before writing the report).
    """
    location.plots.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    similarities = probes = None
    try:
        similarities = collect_similarities(location)
        written.append(write_table(similarities, location, "similarities"))
        written += plot_similarity_heatmaps(similarities, location.plots)
    except MissingInputError:
        pass
    try:
        probes = collect_probes(location)
        written.append(write_table(probes, location, "probes"))
        written.append(write_table(probe_summary(probes), location, "probe_summary"))
        written += plot_accuracy_vs_depth(probes, location.plots)
    except MissingInputError:
        pass
    try:
        tables = collect_soup_metrics(location)
        for name in (
            "soup_vs_ingredients",
            "weight_pairs",
            "barriers",
            "branching_soup_results",
            "purity",
        ):
            if name in tables:
                written.append(write_table(tables[name], location, f"soups_{name}"))
        if "soup_vs_ingredients" in tables:
            written.append(
                plot_soup_improvement(
                    tables["soup_vs_ingredients"], location.plots, n_test=n_test_images(location)
                )
            )
    except MissingInputError:
        pass
    try:
        consistency = collect_consistency(location)
        written.append(write_table(consistency, location, "consistency"))
        written.append(plot_consistency(consistency, location.plots))
    except MissingInputError:
        pass
    if similarities is not None and probes is not None:
        relation = similarity_vs_performance(similarities, probes)
        written.append(write_table(relation, location, "similarity_vs_performance"))
    return written
