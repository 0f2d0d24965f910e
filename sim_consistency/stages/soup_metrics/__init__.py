"""Stage: soups vs ingredients, weight geometry, barriers, basins and feature purity.

``python scripts/soup_metrics.py --models_config … --datasets … [--soup <variant_key> …]
[--base <model_id>] [--ood_datasets …] [--interpolate A:B …] [--barrier_models …]
[--parts …]`` reads what the earlier stages wrote and writes tidy CSV + JSON and PNG + PDF
figures under ``results/soup_metrics/``:

=================  ===========================================  ==============================
part               reads                                         writes (``results/soup_metrics/``)
=================  ===========================================  ==============================
``accuracy``       single_model_evaluation's head/probe results  ``accuracy.csv``,
                   (fast protocol, ``--probe_seed``)             ``soup_vs_ingredients.{csv,json}``,
                                                                 ``id_ood.csv``, ``id_vs_ood.*``
``cka``            layer_cka's grids (``--pairs all`` over the   ``block_cka.csv``,
                   soups, ingredients and base)                  ``block_cka_summary.csv``
``weights``        checkpoints, build_variants' variants         ``weight_{pairs,layers,norms}.csv``
``monosoup``       build_variants' MonoSoup recipes              ``monosoup_layers.csv`` + figures
``barriers``       feature caches (logits) of the generated      ``interpolation_curves.csv``,
                   interpolation points                          ``barriers.csv``,
                                                                 ``barrier_matrix_<kind>_<ds>.csv``
``branching``      results of the runs and generated branching   ``branching_*.csv``,
                   soups; the runs' weights                      ``branching_summary.json``
``purity``         feature caches (train + split)                ``purity.csv``,
                                                                 ``retention_sweep.csv`` + figures
=================  ===========================================  ==============================

Pipeline of a soup study: ``build_variants --generate OUT …`` (interpolation points and
branching soups as variant entries of a generated models config) → ``feature_extraction`` →
``single_model_evaluation`` / ``layer_cka`` → ``soup_metrics``. Nothing upstream is recomputed
here: a missing or stale input stops the run (exit 2) with the exact command that produces it.
``summary.json`` records every estimator, setting and each part's inputs key.

``accuracy`` and ``branching`` also read each model's per-row test predictions
(``test_predictions.npz`` of its probe results) for paired bootstrap intervals over test images
(``--n_bootstrap``, ``--ci_seed``), McNemar's exact test of soup vs best ingredient and the
supported / not supported / inconclusive verdicts.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sim_consistency.runtime import Stage, run_stage
from sim_consistency.stages.soup_metrics.settings import PARTS, SoupMetricsSettings

if TYPE_CHECKING:
    from sim_consistency.launch import LaunchReport
    from sim_consistency.tracking import Tracker

__all__ = [
    "PARTS",
    "PARTS_CODE_VERSION",
    "PART_MODULES",
    "SOUP_METHODS",
    "STAGE",
    "SoupMetricsSettings",
    "Study",
    "WorkItem",
    "main",
    "part_keys",
    "plan",
    "run",
    "run_item",
]

#: Names served lazily from the package's modules (they import pandas/torch; ``--help`` not).
_LAZY = {
    "PARTS_CODE_VERSION": "driver",
    "PART_MODULES": "driver",
    "WorkItem": "driver",
    "part_keys": "driver",
    "plan": "driver",
    "run": "driver",
    "run_item": "driver",
    "SOUP_METHODS": "study",
    "Study": "study",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _plan(settings: SoupMetricsSettings) -> list[Any]:
    from sim_consistency.stages.soup_metrics.driver import plan

    return plan(settings)  # every input checked here, before any job starts


def _run(settings: SoupMetricsSettings, item: Any) -> Any:
    from sim_consistency.stages.soup_metrics.driver import run_item

    run_item(settings, item)
    return settings.out_dir / "summary.json"


def _track(
    tracker: Tracker, settings: SoupMetricsSettings, items: list[Any], report: LaunchReport
) -> None:
    if not (report.is_success and report.results()):
        return
    import json

    import pandas as pd

    summary = json.loads((settings.out_dir / "summary.json").read_text())
    tracker.log_metrics({"n_parts": len(summary["parts"])})
    accuracy = settings.out_dir / "accuracy.csv"
    if accuracy.is_file():
        tracker.log_table("accuracy", pd.read_csv(accuracy))


def _finish(settings: SoupMetricsSettings, items: list[Any], report: LaunchReport) -> None:
    if items and report.is_success:
        parts = [p for p in PARTS if p in items[0].parts] or ["summary (relabelled)"]
        print(f"soup metrics: {', '.join(parts)} -> {settings.out_dir}")
    elif not items:
        print(f"soup metrics: up to date -> {settings.out_dir}")


STAGE = Stage(
    name="soup_metrics",
    settings=SoupMetricsSettings,
    description="Soups vs ingredients: accuracy, block CKA, weights, barriers, branching, purity.",
    details="Reads what the earlier stages wrote (probe results, layer_cka grids, feature "
    "caches, variants) and writes results/soup_metrics/; a missing input stops the run with the "
    "command that produces it.",
    examples=(
        "python scripts/soup_metrics.py --models_config configs/models/demo.json "
        "--datasets wds/digits",
        "python scripts/soup_metrics.py --models_config study.json --datasets wds/digits "
        "--interpolate ft1:ft2 --parts barriers accuracy",
    ),
    plan=_plan,
    run=_run,
    outputs=lambda item: [item.summary],
    label=lambda item: "soup_metrics",
    output_root=lambda settings: settings.out_dir,
    track=_track,
    finish=_finish,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/soup_metrics.py``."""
    return run_stage(STAGE, argv)
