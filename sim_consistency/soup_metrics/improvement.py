"""Soups vs their ingredients: accuracy gains over the mean and the best ingredient.

The model-soups paper (Wortsman et al. 2022, Table/Fig. "soup vs ingredients") compares a soup's
accuracy with the average and the best of the models that went into it, in distribution (ID) and
under distribution shift (OOD). Here every number comes from a tidy accuracy table, so the same
code serves head accuracy from cached logits and linear-probe accuracy.

Definitions (per dataset, accuracy in [0, 1]):
``improvement_over_mean = acc(soup) − mean_i acc(ingredient_i)`` and
``improvement_over_best = acc(soup) − max_i acc(ingredient_i)``.
ID average = unweighted mean over the datasets not marked OOD; OOD average = unweighted mean over
the datasets marked OOD (NaN when there are none).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from sim_consistency.errors import ConfigError

__all__ = ["id_ood_averages", "soup_improvement"]


def _accuracy_lookup(accuracy: pd.DataFrame, metric: str) -> pd.Series:
    missing = {"model_id", "dataset", metric} - set(accuracy.columns)
    if missing:
        raise ConfigError(f"soup_improvement: accuracy table lacks columns {sorted(missing)}.")
    dup = accuracy.duplicated(["model_id", "dataset"])
    if dup.any():
        first = accuracy.loc[dup, ["model_id", "dataset"]].iloc[0].tolist()
        raise ConfigError(f"soup_improvement: two accuracy rows for (model_id, dataset) {first}.")
    return accuracy.set_index(["model_id", "dataset"])[metric]


def soup_improvement(
    accuracy: pd.DataFrame,
    soups: Mapping[str, Sequence[str]],
    *,
    metric: str = "top1",
    ood_datasets: Collection[str] = (),
) -> pd.DataFrame:
    """Return one row per soup × dataset comparing the soup with its ingredients.

    Args:
        accuracy: tidy table with columns ``model_id, dataset, <metric>``.
        soups: ``{soup_id: [ingredient ids]}``.
        metric: the accuracy column to compare.
        ood_datasets: datasets counted as OOD (the rest are ID).

    Returns:
        Columns ``soup_id, dataset, is_ood, n_ingredients, soup, ingredient_mean,
        ingredient_best, best_ingredient, improvement_over_mean, improvement_over_best``.

    Raises:
        ConfigError: a soup without ingredients, or a missing accuracy for a soup or ingredient.
    """
    lookup = _accuracy_lookup(accuracy, metric)
    datasets = sorted(accuracy["dataset"].unique())
    rows = []
    for soup_id, ingredients in soups.items():
        if not ingredients:
            raise ConfigError(f"soup_improvement: soup {soup_id!r} has no ingredients.")
        for dataset in datasets:
            needed = [soup_id, *ingredients]
            absent = [m for m in needed if (m, dataset) not in lookup.index]
            if absent:
                raise ConfigError(
                    f"soup_improvement: no {metric} for {absent} on dataset {dataset!r}; "
                    "evaluate every soup and ingredient on every dataset first."
                )
            soup_acc = float(lookup[(soup_id, dataset)])
            ing = np.array([float(lookup[(m, dataset)]) for m in ingredients])
            best = int(np.argmax(ing))
            rows.append(
                {
                    "soup_id": soup_id,
                    "dataset": dataset,
                    "is_ood": dataset in set(ood_datasets),
                    "n_ingredients": len(ingredients),
                    "soup": soup_acc,
                    "ingredient_mean": float(ing.mean()),
                    "ingredient_best": float(ing[best]),
                    "best_ingredient": ingredients[best],
                    "improvement_over_mean": soup_acc - float(ing.mean()),
                    "improvement_over_best": soup_acc - float(ing[best]),
                }
            )
    return pd.DataFrame(rows)


def id_ood_averages(
    accuracy: pd.DataFrame, *, metric: str = "top1", ood_datasets: Collection[str] = ()
) -> pd.DataFrame:
    """Return per model its ID and OOD average accuracy (unweighted mean over datasets).

    Columns ``model_id, id_avg, ood_avg, n_id, n_ood``; an average over no dataset is NaN.
    """
    lookup = _accuracy_lookup(accuracy, metric).reset_index()
    lookup["is_ood"] = lookup["dataset"].isin(set(ood_datasets))
    rows = []
    for model_id, group in lookup.groupby("model_id", sort=True):
        id_vals = group.loc[~group["is_ood"], metric]
        ood_vals = group.loc[group["is_ood"], metric]
        rows.append(
            {
                "model_id": model_id,
                "id_avg": float(id_vals.mean()) if len(id_vals) else float("nan"),
                "ood_avg": float(ood_vals.mean()) if len(ood_vals) else float("nan"),
                "n_id": len(id_vals),
                "n_ood": len(ood_vals),
            }
        )
    return pd.DataFrame(rows)
