"""Part ``accuracy``: every model's accuracy and each soup against its ingredients, ID and OOD.

Reads the head / fast-probe results ``single_model_evaluation`` wrote (seed ``--probe_seed``)
and writes ``accuracy.csv`` (model × dataset), ``soup_vs_ingredients.{csv,json}``,
``id_ood.csv`` and, with OOD datasets, ``id_vs_ood.{png,pdf}``. ``soup_vs_ingredients`` carries
the paired intervals, McNemar's test and verdicts of
:func:`~sim_consistency.soup_metrics.soup_paired_tests`, from the per-row test predictions the
probe results store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sim_consistency.errors import CacheError
from sim_consistency.io import atomic_write_text
from sim_consistency.soup_metrics import id_ood_averages, soup_improvement, soup_paired_tests
from sim_consistency.soup_metrics.plots import plot_id_vs_ood, save_figure
from sim_consistency.stages.soup_metrics.inputs import (
    Needs,
    accuracy_record,
    correctness,
    probe_results,
)
from sim_consistency.stages.soup_metrics.study import Study, write_csv

ESTIMATOR = {
    "accuracy": "own head from cached logits (top-1/top-5/balanced); models without a head: "
    "fast linear probe on the last block, trained on the train split (single_model_evaluation "
    "results, protocol fast, --probe_seed)",
    "improvement": "soup − mean / best ingredient accuracy, per dataset; ID/OOD: unweighted "
    "means over datasets",
    "soup_vs_ingredients_intervals": "paired percentile bootstrap over test images of soup − "
    "best ingredient and soup − mean ingredient (per-image mean correctness), --n_bootstrap "
    "replicates, seed --ci_seed, 95%; McNemar's exact test soup vs best (two-sided); verdict: "
    "supported / not supported / inconclusive = interval above / below / containing 0",
}


def inputs(study: Study, needs: Needs) -> dict[str, Any] | None:
    """The probe/head results read (None: no model to score)."""
    s = study.settings
    if not study.accuracy_models:
        return None
    return {
        "results": probe_results(study, study.accuracy_models, s.datasets, needs),
        "models": study.accuracy_models,
        "methods": [_method(study, m) for m in study.accuracy_models],
        "soups": study.soups,
        "datasets": list(s.datasets),
        "ood_datasets": list(s.ood_datasets),
        "split": s.split,
        "n_bootstrap": s.n_bootstrap,
        "ci_seed": s.ci_seed,
    }


def _method(study: Study, model_id: str) -> str:
    spec = study.specs[model_id]
    return spec.variant.method if spec.variant is not None else spec.source


def run(study: Study) -> None:
    """Write the accuracy tables and the ID-vs-OOD figure."""
    s = study.settings
    rows = [
        {
            "model_id": m,
            "dataset": d,
            "split": s.split,
            "is_ood": d in s.ood_datasets,
            "is_soup": m in study.soups,
            "method": _method(study, m),
            **accuracy_record(study, m, d),
        }
        for m in study.accuracy_models
        for d in s.datasets
    ]
    accuracy = pd.DataFrame(rows)
    out = study.out_dir
    write_csv(accuracy, out / "accuracy.csv")
    if study.soups:
        table = soup_improvement(accuracy, study.soups, ood_datasets=s.ood_datasets)
        models = {m for soup, ing in study.soups.items() for m in (soup, *ing)}
        table = soup_paired_tests(
            table,
            study.soups,
            aligned_correctness(study, sorted(models), s.datasets),
            n_bootstrap=s.n_bootstrap,
            seed=s.ci_seed,
        )
        write_csv(table, out / "soup_vs_ingredients.csv")
        atomic_write_text(
            out / "soup_vs_ingredients.json", table.to_json(orient="records", indent=1)
        )
    averages = id_ood_averages(accuracy, ood_datasets=s.ood_datasets)
    write_csv(averages, out / "id_ood.csv")
    if s.ood_datasets and averages["ood_avg"].notna().any():
        id_sets = [d for d in s.datasets if d not in s.ood_datasets]
        figure = plot_id_vs_ood(
            averages, list(study.soups), id_datasets=id_sets, ood_datasets=s.ood_datasets
        )
        save_figure(figure, out / "id_vs_ood")


def aligned_correctness(
    study: Study, models: Sequence[str], datasets: Iterable[str]
) -> dict[tuple[str, str], np.ndarray]:
    """Return ``{(model, dataset): per-image correctness}``, every model of a dataset in the
    first model's test-row order (raises CacheError when the models' test rows differ)."""
    out: dict[tuple[str, str], np.ndarray] = {}
    for dataset in datasets:
        order: dict[str, int] | None = None
        for model in models:
            keys, correct = correctness(study, model, dataset)
            if order is None:
                order = {str(k): i for i, k in enumerate(keys)}
                out[(model, dataset)] = correct
                continue
            index = np.array([order.get(str(k), -1) for k in keys])
            if len(keys) != len(order) or (index < 0).any():
                raise CacheError(
                    f"{dataset}: {model!r} was scored on other test rows than the other "
                    "models; re-extract its features and rerun its probe."
                )
            aligned = np.empty_like(correct)
            aligned[index] = correct
            out[(model, dataset)] = aligned
    return out
