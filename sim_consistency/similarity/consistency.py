"""Rep2Rep consistency: do model×model similarity structures agree across datasets?

For two datasets, the models both matrices contain are intersected and aligned by id, the
entries of the strict upper triangle (or of an explicit list of model pairs, e.g. "every
supervised CNN vs every self-supervised ViT") are flattened in the same order, and their Pearson
or Spearman correlation is the consistency of the pair of datasets (Ciernik et al., 2025,
"Objective drives the consistency of representational similarity across datasets").
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from sim_consistency.errors import ConfigError

__all__ = [
    "consistency",
    "model_set_members",
    "model_set_pairs",
    "pair_values",
    "consistency_summary",
]

MIN_PAIRS = 3


def _check_matrix(name: str, frame: pd.DataFrame) -> None:
    if not isinstance(frame, pd.DataFrame) or list(frame.index) != list(frame.columns):
        raise ConfigError(
            f"consistency: matrix of {name!r} must be a square DataFrame whose index and "
            "columns are the same model ids in the same order."
        )


def pair_values(frame: pd.DataFrame, pairs: Iterable[tuple[str, str]]) -> np.ndarray:
    """Return ``frame.loc[a, b]`` for each model pair, as a float64 vector."""
    rows = frame.index.get_indexer([a for a, _ in pairs])
    cols = frame.columns.get_indexer([b for _, b in pairs])
    return frame.to_numpy(dtype=np.float64)[rows, cols]


def _upper_pairs(model_ids: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(model_ids) for b in model_ids[i + 1 :]]


def _correlate(x: np.ndarray, y: np.ndarray, method: str, where: str) -> float:
    keep = np.isfinite(x) & np.isfinite(y)
    if not keep.all():
        warnings.warn(
            f"consistency {where}: {int((~keep).sum())} model pair(s) with NaN similarity "
            "left out.",
            stacklevel=3,
        )
        x, y = x[keep], y[keep]
    if x.size < MIN_PAIRS or np.ptp(x) == 0 or np.ptp(y) == 0:
        warnings.warn(
            f"consistency {where}: fewer than {MIN_PAIRS} usable model pairs or constant "
            "similarities; reported as NaN.",
            stacklevel=3,
        )
        return float("nan")
    if method == "pearson":
        return float(stats.pearsonr(x, y)[0])
    return float(stats.spearmanr(x, y)[0])


def consistency(
    matrices: Mapping[str, pd.DataFrame],
    method: Literal["pearson", "spearman"] = "pearson",
    *,
    model_pairs: Iterable[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """Return the (D, D) consistency table of D datasets' model×model similarity matrices.

    Args:
        matrices: ``{dataset: (M, M) DataFrame}`` indexed by model id on both axes.
        method: ``"pearson"`` or ``"spearman"`` (average ranks), as ``scipy.stats``.
        model_pairs: restrict to these (a, b) model pairs (see :func:`model_set_pairs`);
            default: every pair of the strict upper triangle. Pairs whose models a dataset
            lacks are dropped for that pair of datasets.

    Returns:
        Symmetric DataFrame indexed by dataset on both axes, 1 on the diagonal; NaN (with a
        warning) where fewer than 3 model pairs are shared.

    Raises:
        ConfigError: an unknown ``method`` or a matrix that is not square and labelled.
    """
    if method not in ("pearson", "spearman"):
        raise ConfigError(f"consistency: method must be 'pearson' or 'spearman' (got {method!r}).")
    for name, frame in matrices.items():
        _check_matrix(name, frame)
    names = list(matrices)
    explicit = None if model_pairs is None else [tuple(p) for p in model_pairs]
    table = pd.DataFrame(np.eye(len(names)), index=names, columns=names, dtype=np.float64)
    for i, da in enumerate(names):
        for db in names[i + 1 :]:
            a, b = matrices[da], matrices[db]
            common = [m for m in a.index if m in set(b.index)]
            if explicit is None:
                pairs = _upper_pairs(sorted(common))
            else:
                shared = set(common)
                pairs = [(x, y) for x, y in explicit if x in shared and y in shared]
            value = _correlate(
                pair_values(a, pairs), pair_values(b, pairs), method, f"{da} vs {db}"
            )
            table.loc[da, db] = table.loc[db, da] = value
    return table


def model_set_members(
    metadata: Mapping[str, Mapping[str, Any]], filt: Mapping[str, Any]
) -> list[str]:
    """Return the models whose metadata has every field of ``filt`` equal (config order)."""
    return [m for m, meta in metadata.items() if all(meta.get(k) == v for k, v in filt.items())]


def model_set_pairs(
    metadata: Mapping[str, Mapping[str, Any]],
    set_a: Mapping[str, Any],
    set_b: Mapping[str, Any],
) -> list[tuple[str, str]]:
    """Return the model pairs (a, b) with a in set A, b in set B and a != b (each once).

    A set is a metadata filter, e.g. ``{"objective": "supervised", "architecture_class":
    "cnn"}``: a model belongs to it when all its listed metadata fields are equal.

    Args:
        metadata: ``{model_id: {field: value}}`` (the models config's metadata).
        set_a: filter of the first model set.
        set_b: filter of the second model set (may equal ``set_a``: pairs within one set).

    Raises:
        ConfigError: fewer than 3 pairs (the correlation would be meaningless).
    """
    seen: set[frozenset[str]] = set()
    pairs: list[tuple[str, str]] = []
    for a in model_set_members(metadata, set_a):
        for b in model_set_members(metadata, set_b):
            key = frozenset((a, b))
            if a != b and key not in seen:
                seen.add(key)
                pairs.append((a, b))
    if len(pairs) < MIN_PAIRS:
        raise ConfigError(
            f"model_set_pairs: {dict(set_a)} x {dict(set_b)} gives {len(pairs)} model pair(s); "
            f"at least {MIN_PAIRS} are needed. Widen the sets or add models."
        )
    return pairs


def consistency_summary(table: pd.DataFrame) -> dict[str, float]:
    """Return mean, median, std, min and max of the off-diagonal entries of a consistency table."""
    values = table.to_numpy()[np.triu_indices(len(table), k=1)]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {k: float("nan") for k in ("mean", "median", "std", "min", "max")} | {"n_pairs": 0}
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "n_pairs": int(values.size),
    }
