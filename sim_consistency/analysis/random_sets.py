"""Random model-set sampling: how much does consistency depend on which models are studied?

Each draw takes ``k`` models uniformly without replacement (``numpy`` generator seeded once
with ``seed``, draws in sequence) and computes the D×D consistency of the datasets' matrices
restricted to them (:func:`sim_consistency.similarity.consistency`); the mean over dataset
pairs is the draw's value. The distribution over draws, next to the all-models value, shows
whether a finding rests on the particular model set (Rep2Rep's robustness analysis).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from sim_consistency.errors import ConfigError
from sim_consistency.similarity import consistency, consistency_summary

__all__ = ["draw_summary", "histogram_figure", "random_set_consistency"]


def random_set_consistency(
    matrices: Mapping[str, pd.DataFrame],
    sizes: Sequence[int],
    n_draws: int,
    seed: int = 0,
    method: Literal["pearson", "spearman"] = "pearson",
) -> pd.DataFrame:
    """Return one row per (k, draw): the models drawn and the mean/min/max consistency.

    Draw ``-1`` of each k is the all-models value (``k`` = every shared model) for reference.

    Raises:
        ConfigError: a k below 3 or above the number of models all matrices share, or
            ``n_draws`` < 1.
    """
    shared = sorted(set.intersection(*(set(m.index) for m in matrices.values())))
    bad = [k for k in sizes if not 3 <= k <= len(shared)]
    if bad or n_draws < 1:
        raise ConfigError(
            f"--set_sizes {bad or list(sizes)} / --n_draws {n_draws}: each k must be in "
            f"3..{len(shared)} (the models all datasets share) and n_draws >= 1."
        )
    rng = np.random.default_rng(seed)
    full = consistency_summary(consistency(matrices, method=method))
    rows: list[dict[str, Any]] = []
    for k in sizes:
        rows.append({"k": len(shared), "draw": -1, "models": " ".join(shared), **full})
        for draw in range(n_draws):
            chosen = sorted(rng.choice(shared, size=k, replace=False).tolist())
            sub = {d: m.loc[chosen, chosen] for d, m in matrices.items()}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a constant sub-matrix is NaN, counted below
                summary = consistency_summary(consistency(sub, method=method))
            rows.append({"k": k, "draw": draw, "models": " ".join(chosen), **summary})
    return pd.DataFrame(rows)


def draw_summary(draws: pd.DataFrame) -> pd.DataFrame:
    """Return per k: the all-models mean, and quantiles of the draws' mean consistency, with
    the share of draws below the all-models value."""
    rows = []
    full = draws[draws["draw"] == -1]
    for k, part in draws[draws["draw"] >= 0].groupby("k", sort=True):
        values = part["mean"].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        reference = float(full["mean"].iloc[0])
        rows.append(
            {
                "k": k,
                "n_draws": len(part),
                "n_finite": int(values.size),
                "all_models_mean": reference,
                "draws_mean": float(values.mean()) if values.size else float("nan"),
                "q05": float(np.quantile(values, 0.05)) if values.size else float("nan"),
                "median": float(np.median(values)) if values.size else float("nan"),
                "q95": float(np.quantile(values, 0.95)) if values.size else float("nan"),
                "min": float(values.min()) if values.size else float("nan"),
                "max": float(values.max()) if values.size else float("nan"),
                "share_below_all_models": float((values < reference).mean())
                if values.size
                else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def histogram_figure(draws: pd.DataFrame, title: str) -> Any:
    """Return histograms of the draws' mean consistency per k, all-models value marked."""
    from sim_consistency.figures import series_style, subplots

    fig, ax = subplots(figsize=(6.0, 4.0))
    reference = float(draws.loc[draws["draw"] == -1, "mean"].iloc[0])
    for i, (k, part) in enumerate(draws[draws["draw"] >= 0].groupby("k", sort=True)):
        values = part["mean"].to_numpy(dtype=np.float64)
        values = values[np.isfinite(values)]
        ax.hist(values, bins=20, alpha=0.5, color=series_style(i)["color"], label=f"k={k}")
    ax.axvline(reference, color="black", linestyle="--", label="all models")
    ax.set_xlabel("mean consistency over dataset pairs")
    ax.set_ylabel("draws")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return fig
