"""Part ``barriers``: loss and error barriers along linear interpolation paths.

Each point of a path is a generated ``interpolate`` variant (``build_variants --generate
--interpolate A:B --barrier_models …``) whose logits ``feature_extraction`` cached; this part
reads them and writes ``interpolation_curves.csv``, ``barriers.csv`` (both definitions of
:mod:`sim_consistency.soup_metrics.barriers`), ``interpolation_{error,loss}.{png,pdf}`` and, with
``--barrier_models``, ``barrier_matrix_<kind>_<dataset>.csv``.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from sim_consistency.errors import ConfigError
from sim_consistency.features import open_cache
from sim_consistency.io import atomic_write_text
from sim_consistency.merging.generate import barrier_pairs, interpolation_alphas, interpolation_id
from sim_consistency.probe import head_accuracy
from sim_consistency.project import dataset_slug
from sim_consistency.soup_metrics import BARRIER_DEFINITIONS, barrier, barrier_matrix
from sim_consistency.soup_metrics.barriers import cross_entropy
from sim_consistency.soup_metrics.plots import plot_barrier_curves, save_figure
from sim_consistency.stages.soup_metrics.inputs import Needs, cache_keys
from sim_consistency.stages.soup_metrics.study import Study, write_csv

log = logging.getLogger("sim_consistency.soup_metrics")


def _pairs(study: Study) -> list[tuple[str, str]]:
    return barrier_pairs(study.settings.interpolate, study.settings.barrier_models)


def _point_ids(study: Study) -> list[str]:
    alphas = interpolation_alphas(study.settings.n_alphas)
    return [interpolation_id(a, b, alpha) for a, b in _pairs(study) for alpha in alphas]


def _is_point(study: Study, model_id: str, a: str, b: str, alpha: float) -> bool:
    spec = study.specs.get(model_id)
    if spec is None or spec.variant is None or spec.variant.method != "interpolate":
        return False
    options = spec.variant.options
    return (options.get("base"), options.get("finetuned")) == (a, b) and float(
        options.get("alpha", -1)
    ) == float(alpha)


def inputs(study: Study, needs: Needs) -> dict[str, Any] | None:
    """The caches of every interpolation point (None: no pair requested)."""
    pairs = _pairs(study)
    if not pairs:
        log.info("barriers: no --interpolate / --barrier_models pairs, skipped")
        return None
    unknown = sorted({m for pair in pairs for m in pair} - set(study.specs))
    if unknown:
        raise ConfigError(f"--interpolate/--barrier_models: unknown model id(s) {unknown}.")
    alphas = interpolation_alphas(study.settings.n_alphas)
    absent = [
        (a, b)
        for a, b in pairs
        if not all(_is_point(study, interpolation_id(a, b, x), a, b, x) for x in alphas)
    ]
    if absent:
        needs.add(
            f"generated interpolation variants of {', '.join(f'{a}:{b}' for a, b in absent)} "
            f"({len(alphas)} points) in {study.settings.models_config}",
            study.commands.generate(study.specs),
        )
        return {}
    points = _point_ids(study)
    return {
        "caches": cache_keys(study, points, study.settings.datasets, [study.settings.split], needs),
        "pairs": [list(p) for p in pairs],
        "barrier_models": list(study.settings.barrier_models),
    }


def estimator(study: Study) -> dict[str, str]:
    """The barrier definitions and the curve's settings (BN policy of the generated points)."""
    s = study.settings
    points = [m for m in _point_ids(study) if m in study.specs]
    variant = study.specs[points[0]].variant if points else None
    policy = variant.options.get("bn_policy") if variant is not None else None
    return {
        **BARRIER_DEFINITIONS,
        "curve": f"α grid of {s.n_alphas} points, E = error (1 − top-1) and mean cross-entropy "
        f"of the logits on {s.split}; BN policy {policy or 'the method default'}",
        "matrix": "barrier_matrix_<kind>_<dataset>.csv holds the headline barrier",
    }


def _logit_metrics(study: Study, dataset: str, model_id: str) -> tuple[float, float]:
    path = study.location.feature_file(dataset, study.settings.split, model_id)
    with open_cache(path) as cache:
        if not cache.has_logits:
            raise ConfigError(
                f"barriers: {cache.path} has no logits; interpolation barriers need models with "
                "a classification head."
            )
        logits, labels = cache.logits, cache.labels
    top1 = head_accuracy(logits, labels)["top1"]
    return 1.0 - float(top1), cross_entropy(logits, labels)


def run(study: Study) -> None:
    """Write the curves, the barriers, their figures and the barrier matrices."""
    s = study.settings
    pairs = _pairs(study)
    alphas = interpolation_alphas(s.n_alphas)
    curves, rows = [], []
    for dataset in s.datasets:
        for a, b in pairs:
            errors, losses = [], []
            for alpha in alphas:
                error, loss = _logit_metrics(study, dataset, interpolation_id(a, b, alpha))
                errors.append(error)
                losses.append(loss)
                curves.append(
                    {
                        "dataset": dataset,
                        "model_a": a,
                        "model_b": b,
                        "alpha": float(alpha),
                        "error": error,
                        "loss": loss,
                    }
                )
            for kind, values in (("error", errors), ("loss", losses)):
                rows.append(
                    {
                        "dataset": dataset,
                        "model_a": a,
                        "model_b": b,
                        "kind": kind,
                        **barrier(alphas, values),
                    }
                )
    curves_df, barriers_df = pd.DataFrame(curves), pd.DataFrame(rows)
    out = study.out_dir
    write_csv(curves_df, out / "interpolation_curves.csv")
    write_csv(barriers_df, out / "barriers.csv")
    for kind in ("error", "loss"):
        save_figure(plot_barrier_curves(curves_df, kind), out / f"interpolation_{kind}")
    if len(s.barrier_models) >= 2:
        for dataset in s.datasets:
            for kind in ("error", "loss"):
                part = barriers_df[
                    (barriers_df["dataset"] == dataset) & (barriers_df["kind"] == kind)
                ]
                matrix = barrier_matrix(
                    s.barrier_models,
                    {(r.model_a, r.model_b): r.barrier for r in part.itertuples(index=False)},
                )
                path = out / f"barrier_matrix_{kind}_{dataset_slug(dataset)}.csv"
                atomic_write_text(path, matrix.to_csv())
