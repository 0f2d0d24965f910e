"""Consistency by model category, per anchor model, and by dataset category (Rep2Rep §4).

* :func:`category_consistency` — for each value of a metadata field (``objective``,
  ``architecture_class``, ``dataset_class``/``training_data``, ``size_class``), the consistency of
  each pair of datasets computed over the model pairs *within* that category (both models in
  it), as Rep2Rep's per-category boxplots.
* :func:`anchor_consistency` — for one anchor model, the correlation across two datasets of its
  row of the similarity matrix (its similarities to every other shared model): does the anchor
  see the other models the same way on both datasets?
* :func:`dataset_category_consistency` — a D×D consistency table averaged over the dataset
  pairs within a dataset category (or between two categories), e.g. Rep2Rep's domains
  (``dataset_info.json``: Natural single-/multi-domain, Specialized, Structured).

All correlations use :func:`sim_consistency.similarity.consistency` (same pairing, NaN and
<3-pair rules), so a category that holds every model reproduces the all-pairs table.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from sim_consistency.errors import ConfigError
from sim_consistency.similarity import consistency
from sim_consistency.similarity.consistency import MIN_PAIRS

__all__ = [
    "anchor_consistency",
    "anchor_figure",
    "boxplot_figure",
    "category_consistency",
    "dataset_category_consistency",
    "long_table",
]

Method = Literal["pearson", "spearman"]


def long_table(table: pd.DataFrame) -> pd.DataFrame:
    """Return the strict upper triangle of a D×D table as rows ``dataset_a, dataset_b, value``."""
    names = list(table.index)
    rows = [
        {"dataset_a": a, "dataset_b": b, "consistency": float(table.loc[a, b])}
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    ]
    return pd.DataFrame(rows, columns=["dataset_a", "dataset_b", "consistency"])


def category_consistency(
    matrices: Mapping[str, pd.DataFrame],
    metadata: Mapping[str, Mapping[str, Any]],
    fields: Sequence[str],
    method: Method = "pearson",
) -> pd.DataFrame:
    """Return the per-category consistency of every dataset pair, as a tidy table.

    Args:
        matrices: ``{dataset: (M, M) similarity DataFrame}`` indexed by model id.
        metadata: ``{model_id: {field: value}}`` from the models config.
        fields: the metadata fields to group by; models without a field are left out of it.

    Returns:
        Rows ``field, category, n_models, n_model_pairs, dataset_a, dataset_b, consistency``;
        a category with fewer than 3 model pairs has no rows (one is listed with a warning).

    Raises:
        ConfigError: no field of ``fields`` is set on any model.
    """
    models = sorted(set().union(*(set(m.index) for m in matrices.values())))
    rows: list[dict[str, Any]] = []
    used = False
    for field in fields:
        groups: dict[str, list[str]] = {}
        for model in models:
            value = metadata.get(model, {}).get(field)
            if value is not None:
                groups.setdefault(str(value), []).append(model)
        used |= bool(groups)
        for category, members in sorted(groups.items()):
            pairs = [(a, b) for i, a in enumerate(members) for b in members[i + 1 :]]
            if len(pairs) < MIN_PAIRS:
                warnings.warn(
                    f"category consistency: {field}={category} has {len(members)} model(s), "
                    f"{len(pairs)} pair(s) (< {MIN_PAIRS}); left out.",
                    stacklevel=2,
                )
                continue
            table = consistency(matrices, method=method, model_pairs=pairs)
            for row in long_table(table).to_dict("records"):
                rows.append(
                    {
                        "field": field,
                        "category": category,
                        "n_models": len(members),
                        "n_model_pairs": len(pairs),
                        **row,
                    }
                )
    if not used:
        raise ConfigError(
            f"category consistency: no model of the config has any of the metadata fields "
            f'{list(fields)}; set them in the models config (e.g. "objective": "supervised") '
            "or choose others with --category_fields."
        )
    columns = ["field", "category", "n_models", "n_model_pairs", "dataset_a", "dataset_b"]
    return pd.DataFrame(rows, columns=[*columns, "consistency"])


def _row_correlation(x: np.ndarray, y: np.ndarray, method: Method) -> float:
    from scipy import stats

    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < MIN_PAIRS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    fn = stats.pearsonr if method == "pearson" else stats.spearmanr
    return float(fn(x, y)[0])


def anchor_consistency(
    matrices: Mapping[str, pd.DataFrame],
    anchors: Sequence[str] | None = None,
    method: Method = "pearson",
) -> pd.DataFrame:
    """Return, per anchor model and dataset pair, the correlation of the anchor's rows.

    The row of anchor ``a`` on dataset D is ``S_D[a, m]`` for every other model ``m`` both
    datasets share (in one order). NaN where fewer than 3 other models are shared or a row is
    constant.

    Returns:
        Rows ``anchor, dataset_a, dataset_b, n_models, consistency``.

    Raises:
        ConfigError: an anchor that no matrix contains.
    """
    names = list(matrices)
    every = set().union(*(set(m.index) for m in matrices.values()))
    chosen = sorted(every) if not anchors else list(anchors)
    unknown = [a for a in chosen if a not in every]
    if unknown:
        raise ConfigError(
            f"--anchors: {unknown} are in no similarity matrix (its models: {sorted(every)})."
        )
    rows = []
    for anchor in chosen:
        for i, da in enumerate(names):
            for db in names[i + 1 :]:
                a, b = matrices[da], matrices[db]
                if anchor not in a.index or anchor not in b.index:
                    continue
                others = [m for m in a.index if m in set(b.index) and m != anchor]
                x = a.loc[anchor, others].to_numpy(dtype=np.float64)
                y = b.loc[anchor, others].to_numpy(dtype=np.float64)
                rows.append(
                    {
                        "anchor": anchor,
                        "dataset_a": da,
                        "dataset_b": db,
                        "n_models": len(others),
                        "consistency": _row_correlation(x, y, method),
                    }
                )
    return pd.DataFrame(
        rows, columns=["anchor", "dataset_a", "dataset_b", "n_models", "consistency"]
    )


def dataset_category_consistency(
    table: pd.DataFrame, categories: Mapping[str, str]
) -> pd.DataFrame:
    """Return the mean consistency within and between dataset categories.

    Args:
        table: a D×D consistency table (:func:`sim_consistency.similarity.consistency`).
        categories: ``{dataset: category}``; datasets without one are left out.

    Returns:
        Rows ``category_a, category_b, n_dataset_pairs, mean, median, min, max`` over the
        dataset pairs (a ≠ b) with a in ``category_a`` and b in ``category_b``
        (``category_a <= category_b``).

    Raises:
        ConfigError: no dataset of the table has a category.
    """
    known = [d for d in table.index if d in categories]
    if not known:
        raise ConfigError(
            f"dataset categories: none of the datasets {list(table.index)} has a category in "
            "--dataset_categories (a JSON {dataset: category} or Rep2Rep's dataset_info.json)."
        )
    values: dict[tuple[str, str], list[float]] = {}
    for i, da in enumerate(known):
        for db in known[i + 1 :]:
            key = tuple(sorted((categories[da], categories[db])))
            values.setdefault((key[0], key[1]), []).append(float(table.loc[da, db]))
    rows = []
    for (ca, cb), vals in sorted(values.items()):
        arr = np.asarray(vals)
        arr = arr[np.isfinite(arr)]
        stats = (
            {"mean": arr.mean(), "median": np.median(arr), "min": arr.min(), "max": arr.max()}
            if arr.size
            else dict.fromkeys(("mean", "median", "min", "max"), float("nan"))
        )
        rows.append({"category_a": ca, "category_b": cb, "n_dataset_pairs": len(vals), **stats})
    return pd.DataFrame(
        rows,
        columns=["category_a", "category_b", "n_dataset_pairs", "mean", "median", "min", "max"],
    )


def boxplot_figure(table: pd.DataFrame, all_pairs: Sequence[float], title: str) -> Any:
    """Return boxplots of the dataset-pair consistencies per ``field=category``, with the
    all-models values first."""
    from sim_consistency.figures import subplots

    groups = [("all models", np.asarray(all_pairs, dtype=np.float64))]
    for (fld, category), part in table.groupby(["field", "category"], sort=True):
        groups.append((f"{fld}={category}", part["consistency"].to_numpy(dtype=np.float64)))
    fig, ax = subplots(figsize=(max(4.0, 0.6 * len(groups) + 2.0), 4.0))
    ax.boxplot([g[~np.isnan(g)] for _, g in groups], showmeans=True)
    ax.set_xticks(range(1, len(groups) + 1), [name for name, _ in groups], rotation=60, ha="right")
    ax.set_ylabel("consistency over dataset pairs")
    ax.set_title(title)
    return fig


def anchor_figure(anchors: pd.DataFrame, title: str) -> Any:
    """Return boxplots of each anchor's consistency over dataset pairs."""
    from sim_consistency.figures import subplots

    names = sorted(anchors["anchor"].unique())
    values = [anchors.loc[anchors["anchor"] == a, "consistency"].dropna().to_numpy() for a in names]
    fig, ax = subplots(figsize=(max(4.0, 0.5 * len(names) + 2.0), 4.0))
    ax.boxplot(values, showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=60, ha="right")
    ax.set_ylabel("row consistency over dataset pairs")
    ax.set_title(title)
    return fig


def read_dataset_categories(path: Path | None) -> dict[str, str]:
    """Return ``{dataset: category}`` from a JSON file (``--dataset_categories``).

    The file is ``{dataset: category}`` or Rep2Rep's ``dataset_info.json``
    (``{dataset: {"domain": …}}``); ``None`` gives ``{}``.

    Raises:
        ConfigError: unreadable JSON, or an entry that is neither form (naming it).
    """
    if path is None:
        return {}
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"--dataset_categories {path}: not a readable JSON file ({exc})."
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"--dataset_categories {path}: expected a JSON object.")
    out = {}
    for dataset, value in raw.items():
        if isinstance(value, dict) and isinstance(value.get("domain"), str):
            out[dataset] = value["domain"]
        elif isinstance(value, str):
            out[dataset] = value
        else:
            raise ConfigError(
                f"--dataset_categories {path}: entry {dataset!r} must be a category string or "
                f"an object with a 'domain' string (got {value!r})."
            )
    return out
