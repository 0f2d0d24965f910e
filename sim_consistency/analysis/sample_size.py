"""Sensitivity of CKA to the number of samples: sub-sampling curves from the cached features.

For each sample count ``n`` of a grid (default 100, 200, … below the dataset's row count, then
all rows) and each seed, ``n`` rows are drawn without replacement (``numpy`` generator seeded
with ``seed``; the same rows for every model, so the pairs stay aligned) and the model×model
matrix is recomputed on them with the stage's metric and normalisation
(:func:`sim_consistency.similarity.similarity_matrix`). At ``n`` = all rows every seed gives the
full-sample matrix exactly; the curves show how fast the estimate converges to it (Rep2Rep uses
10k rows per dataset).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sim_consistency.errors import ConfigError

if TYPE_CHECKING:
    from sim_consistency.config.similarity import MetricSpec

__all__ = ["convergence_summary", "curve_figure", "sample_counts", "subsample_curves"]

#: Below this many rows unbiased CKA is undefined (its U-statistic divides by n − 3).
MIN_ROWS = 4


def sample_counts(n_rows: int, requested: Sequence[int] = (), step: int = 100) -> list[int]:
    """Return the sorted sample counts: ``requested`` (or multiples of ``step``) below
    ``n_rows``, then ``n_rows`` itself.

    Raises:
        ConfigError: a requested count outside [4, n_rows].
    """
    bad = [n for n in requested if not MIN_ROWS <= n <= n_rows]
    if bad:
        raise ConfigError(
            f"--sample_sizes {bad}: each must be between {MIN_ROWS} and the dataset's "
            f"{n_rows} rows."
        )
    base = list(requested) if requested else list(range(step, n_rows, step))
    return sorted({*base, n_rows})


def subsample_curves(
    features: Sequence[np.ndarray],
    model_ids: Sequence[str],
    spec: MetricSpec,
    counts: Sequence[int],
    seeds: Sequence[int],
    *,
    normalize: bool = True,
) -> pd.DataFrame:
    """Return the similarity of every model pair on ``n`` sub-sampled rows, per n and seed.

    Returns:
        Rows ``n, seed, model_a, model_b, similarity, full, abs_error`` for the pairs a < b
        (``full``: the value on all rows; ``abs_error``: ``|similarity − full|``).
    """
    from sim_consistency.similarity import similarity_matrix

    if spec.sim_method != "cka":
        raise ConfigError(
            f"sample-size curves are computed for CKA metrics (got {spec.sim_method!r})."
        )
    n_rows = features[0].shape[0]
    full = similarity_matrix(features, spec, normalize=normalize)
    upper = np.triu_indices(len(model_ids), k=1)
    rows: list[dict[str, Any]] = []
    for n in counts:
        for seed in seeds:
            if n == n_rows:
                matrix = full
            else:
                idx = np.sort(np.random.default_rng(seed).choice(n_rows, size=n, replace=False))
                matrix = similarity_matrix([f[idx] for f in features], spec, normalize=normalize)
            for i, j in zip(upper[0].tolist(), upper[1].tolist(), strict=True):
                rows.append(
                    {
                        "n": n,
                        "seed": seed,
                        "model_a": model_ids[i],
                        "model_b": model_ids[j],
                        "similarity": float(matrix[i, j]),
                        "full": float(full[i, j]),
                        "abs_error": float(abs(matrix[i, j] - full[i, j])),
                    }
                )
    return pd.DataFrame(rows)


def convergence_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Return per n: mean and max over pairs and seeds of ``abs_error``, and the mean over
    pairs of the across-seed std of the similarity."""
    spread = curves.groupby(["n", "model_a", "model_b"])["similarity"].std(ddof=0)
    out = curves.groupby("n")["abs_error"].agg(mean_abs_error="mean", max_abs_error="max")
    out["mean_seed_std"] = spread.groupby("n").mean()
    out["n_seeds"] = curves.groupby("n")["seed"].nunique()
    return out.reset_index()


def curve_figure(curves: pd.DataFrame, title: str) -> Any:
    """Return a figure: each pair's mean similarity (± seed std) against n, full value dashed."""
    from sim_consistency.figures import series_style, subplots

    fig, ax = subplots(figsize=(6.0, 4.0))
    grouped = curves.groupby(["model_a", "model_b"], sort=True)
    for i, ((a, b), part) in enumerate(grouped):
        style = series_style(i)
        stats = part.groupby("n")["similarity"].agg(["mean", "std"]).fillna(0.0)
        ax.errorbar(
            stats.index,
            stats["mean"],
            yerr=stats["std"],
            label=f"{a} vs {b}",
            color=style["color"],
            linestyle=style["linestyle"],
            marker=style["marker"],
            markersize=3,
            capsize=2,
        )
        ax.axhline(part["full"].iloc[0], color=style["color"], linewidth=0.6, linestyle=":")
    ax.set_xlabel("number of samples n")
    ax.set_ylabel("similarity")
    ax.set_title(title)
    if grouped.ngroups <= 15:
        ax.legend(fontsize=6)
    return fig
