"""Part ``purity``: silhouette, feature-dimension / neuron purity and the retention sweep.

Reads the feature caches (train and the run's split, first dataset) of the purity models
(``--purity_models``, default the soups and the base) and, with ``--purity_weight``, that
tensor of each model's weights. Writes ``purity.csv`` and ``retention_sweep.csv`` +
``retention_sweep_<id>.{png,pdf}`` (:mod:`sim_consistency.soup_metrics.purity`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from sim_consistency.features import open_cache
from sim_consistency.probe import linear_probe
from sim_consistency.soup_metrics import (
    abs_cosine_stats,
    orthogonality_scores,
    retention_sweep,
    silhouette,
)
from sim_consistency.soup_metrics.plots import plot_retention_sweep, save_figure
from sim_consistency.stages.soup_metrics.inputs import Needs, cache_keys, weight_identities
from sim_consistency.stages.soup_metrics.study import Study, write_csv
from sim_consistency.stages.soup_metrics.weights import named_weight

ESTIMATOR = (
    "silhouette (cosine distance) of test features; mean/max/median/std |cos| between feature "
    "dimensions (train) and neuron weight rows; retention keeps the k dimensions with the "
    "lowest (high purity) or highest (low purity) mean |cos|"
)


def inputs(study: Study, needs: Needs) -> dict[str, Any] | None:
    """The caches (and weights, with --purity_weight) read (None: no model)."""
    s = study.settings
    models = study.purity_models
    if not models:
        return None
    dataset = s.datasets[0]
    return {
        "models": models,
        "caches": cache_keys(study, models, [dataset], ["train", s.split], needs),
        "weights": weight_identities(study, models) if s.purity_weight else None,
        "block": s.purity_block,
        "weight": s.purity_weight,
        "retention_ks": list(s.retention_ks),
        "probe_seed": s.probe_seed,
    }


def _probe_and_silhouette(
    y_train: np.ndarray, y_test: np.ndarray, seed: int, X_train: np.ndarray, X_test: np.ndarray
) -> dict[str, float]:
    """Fast-probe top-1 and silhouette of one kept feature subset (the retention sweep's score)."""
    probe = linear_probe(X_train, y_train, X_test, y_test, protocol="fast", seed=seed)
    return {"top1": float(probe["top1"]), "silhouette": silhouette(X_test, y_test, seed=seed)}


def run(study: Study) -> None:
    """Write the purity table, the retention sweeps and their figures."""
    s = study.settings
    loc = study.location
    rows, sweeps = [], []
    dataset = s.datasets[0]
    for model_id in study.purity_models:
        with open_cache(loc.feature_file(dataset, "train", model_id)) as train:
            block = s.purity_block or train.block_names[-1]
            X_train, y_train = train.block(block, dtype=np.float64), train.labels
        with open_cache(loc.feature_file(dataset, s.split, model_id)) as test:
            X_test, y_test = test.block(block, dtype=np.float64), test.labels
        row = {
            "model_id": model_id,
            "dataset": dataset,
            "block": block,
            "silhouette": silhouette(X_test, y_test, seed=s.probe_seed),
        }
        row.update(
            {f"feature_{k}": v for k, v in abs_cosine_stats(X_train.T, skip_zero=True).items()}
        )
        scores = orthogonality_scores(X_train.T, skip_zero=True)
        if s.purity_weight:
            weight = named_weight(study, model_id, s.purity_weight)
            row.update(
                {f"neuron_{k}": v for k, v in abs_cosine_stats(weight, skip_zero=True).items()}
            )
            if weight.shape[0] == X_train.shape[1]:
                scores = orthogonality_scores(weight, skip_zero=True)
        rows.append(row)
        d = X_train.shape[1]
        ks = sorted({k for k in (s.retention_ks or (d // 8, d // 4, d // 2, d)) if 1 <= k <= d})
        evaluate = partial(_probe_and_silhouette, y_train, y_test, s.probe_seed)
        sweep = retention_sweep(X_train, X_test, scores, ks, evaluate).assign(
            model_id=model_id, dataset=dataset, block=block
        )
        sweeps.append(sweep)
        save_figure(
            plot_retention_sweep(sweep, title=f"{model_id}, block {block}, {dataset}"),
            study.out_dir / f"retention_sweep_{model_id}",
        )
    write_csv(pd.DataFrame(rows), study.out_dir / "purity.csv")
    write_csv(pd.concat(sweeps, ignore_index=True), study.out_dir / "retention_sweep.csv")
