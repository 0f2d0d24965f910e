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
  → long format (metric, restriction, method, dataset_a, dataset_b, value).
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
from sim_consistency.io import atomic_write_text
from sim_consistency.project import ProjectLocation

__all__ = [
    "collect_consistency",
    "collect_layer_cka",
    "collect_probes",
    "collect_similarities",
    "collect_soup_metrics",
    "similarity_vs_performance",
    "write_table",
]


def _none_found(folder: Path, what: str, stage: str) -> MissingInputError:
    return MissingInputError(f"{folder}: no {what} found; run scripts/{stage}.py first.")


def collect_similarities(location: ProjectLocation) -> pd.DataFrame:
    """Return every model×model similarity as tidy rows (upper triangle, matrix order)."""
    rows = []
    for csv in sorted(location.model_similarities.glob("*/*/similarity_matrix.csv")):
        metadata_file = csv.parent / "metadata.json"
        if not metadata_file.is_file():  # an unfinished folder: metadata.json is written last
            continue
        metadata = json.loads(metadata_file.read_text())
        matrix = pd.read_csv(csv, index_col="model_id")
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


def collect_consistency(location: ProjectLocation) -> pd.DataFrame:
    """Return every D×D consistency table in long format (off-diagonal entries, a < b)."""
    rows = []
    for csv in sorted(location.consistency.glob("*/*/consistency_*.csv")):
        if not (csv.parent / "metadata.json").is_file():
            continue
        table = pd.read_csv(csv, index_col=0)
        method = csv.stem.removeprefix("consistency_")
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

    probe = probes[probes["kind"] == "probe"]
    last = probe[
        probe["block_index"]
        == probe.groupby(["dataset", "model_id"])["block_index"].transform("max")
    ]
    acc = last.groupby(["dataset", "model_id"])[accuracy].mean()
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
