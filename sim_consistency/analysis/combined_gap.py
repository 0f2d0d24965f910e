"""Similarity vs the performance gap of combined probes: do dissimilar models complement?

Input: a tidy table of combined-probe results, one row per (dataset, model pair) —
:data:`COMBINED_COLUMNS`: ``dataset, model_a, model_b, combined_top1, top1_a, top1_b`` (the
probe on the concatenated features of ``model_a`` and ``model_b``, and the single-model probes
of each, on the same split). The combined-probe stage writes it
(``results/linear_probe/combined/combined_vs_single.csv``,
:mod:`sim_consistency.probe.combined_table`); any table with these columns works. Rows that
repeat a (dataset, ``combiner`` if present, pair) — several seeds — are averaged first.

The *gap* is ``combined_top1 − max(top1_a, top1_b)``: what concatenation adds over the better
model alone. :func:`gap_vs_similarity` joins it with ``S_D[a, b]`` of the dataset's similarity
matrix; Pearson and Spearman correlations summarise the relation per dataset (Rep2Rep finds
lower similarity → larger gain).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim_consistency.errors import ConfigError, DataError, MissingInputError

__all__ = [
    "COMBINED_COLUMNS",
    "PRODUCER",
    "gap_summary",
    "gap_vs_similarity",
    "read_combined_probes",
    "scatter_figure",
]

COMBINED_COLUMNS: tuple[str, ...] = (
    "dataset",
    "model_a",
    "model_b",
    "combined_top1",
    "top1_a",
    "top1_b",
)
#: The command that writes the table (named in the skip message).
PRODUCER = (
    "python scripts/combined_probe.py --models_config M.json --model_sets S.json "
    "--datasets D --combiners concat (sets of two models; after single_model_evaluation)"
)


def read_combined_probes(path: Path) -> pd.DataFrame:
    """Read and check the combined-probe table.

    Raises:
        MissingInputError: no file at ``path`` (the message names the producing command).
        DataError: missing columns or non-numeric accuracies (naming the file and column).
    """
    if not path.is_file():
        raise MissingInputError(
            f"{path}: no combined-probe table; produce it with {PRODUCER}, or pass "
            f"--combined_probes with a CSV of columns {', '.join(COMBINED_COLUMNS)}."
        )
    table = pd.read_csv(path)
    missing = [c for c in COMBINED_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: columns {missing} missing (needs {', '.join(COMBINED_COLUMNS)}).")
    for column in ("combined_top1", "top1_a", "top1_b"):
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise DataError(
                f"{path}: column {column!r} row {row + 2} is not a number "
                f"({table[column].iloc[row]!r})."
            )
        table[column] = values.astype(np.float64)
    keys = [c for c in ("dataset", "combiner", "model_a", "model_b") if c in table.columns]
    if table.duplicated(keys).any():  # several seeds of one combination: their mean
        means = table.groupby(keys, sort=False)[["combined_top1", "top1_a", "top1_b"]].mean()
        counts = table.groupby(keys, sort=False).size().rename("n_runs")
        table = means.join(counts).reset_index()
    return table


def gap_vs_similarity(combined: pd.DataFrame, matrices: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Return the combined-probe rows with ``gap`` and ``similarity`` columns.

    Rows whose dataset has no matrix, or whose models the matrix lacks, are left out.

    Raises:
        ConfigError: no row matches a matrix (wrong datasets or model ids).
    """
    rows: list[dict[str, Any]] = []
    for record in combined.to_dict("records"):
        frame = matrices.get(str(record["dataset"]))
        a, b = str(record["model_a"]), str(record["model_b"])
        if frame is None or a not in frame.index or b not in frame.index:
            continue
        best = max(record["top1_a"], record["top1_b"])
        rows.append(
            {
                **{c: record[c] for c in COMBINED_COLUMNS},
                **({"combiner": record["combiner"]} if "combiner" in record else {}),
                "best_single_top1": best,
                "gap": record["combined_top1"] - best,
                "similarity": float(frame.loc[a, b]),
            }
        )
    if not rows:
        raise ConfigError(
            "combined probes: no (dataset, model_a, model_b) row matches the similarity "
            f"matrices (datasets {sorted(matrices)}; table datasets "
            f"{sorted(combined['dataset'].astype(str).unique())})."
        )
    return pd.DataFrame(rows)


def gap_summary(joined: pd.DataFrame) -> pd.DataFrame:
    """Return per dataset (and combiner, when the table has one) the number of pairs and the
    Pearson/Spearman correlation of similarity with the gap (NaN below 3 pairs or for constant
    columns)."""
    from scipy import stats

    by = ["dataset", "combiner"] if "combiner" in joined.columns else ["dataset"]
    rows = []
    for group, part in joined.groupby(by, sort=True):
        x, y = part["similarity"].to_numpy(), part["gap"].to_numpy()
        ok = len(part) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0
        rows.append(
            {
                **dict(zip(by, group, strict=True)),
                "n_pairs": len(part),
                "pearson": float(stats.pearsonr(x, y)[0]) if ok else float("nan"),
                "spearman": float(stats.spearmanr(x, y)[0]) if ok else float("nan"),
                "mean_gap": float(y.mean()),
            }
        )
    return pd.DataFrame(rows, columns=[*by, "n_pairs", "pearson", "spearman", "mean_gap"])


def scatter_figure(joined: pd.DataFrame, metric: str) -> Any:
    """Return a scatter of gap (pp) against similarity, one series per dataset."""
    from sim_consistency.figures import series_style, subplots

    fig, ax = subplots(figsize=(5.5, 4.0))
    by = ["dataset", "combiner"] if "combiner" in joined.columns else ["dataset"]
    for i, (group, part) in enumerate(joined.groupby(by, sort=True)):
        style = series_style(i)
        ax.scatter(
            part["similarity"],
            100 * part["gap"],
            color=style["color"],
            marker=style["marker"],
            label=" / ".join(map(str, group)),
        )
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel(f"similarity ({metric})")
    ax.set_ylabel("combined − best single top-1 (pp)")
    ax.legend(fontsize=7)
    return fig
