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
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path

import pandas as pd

from sim_consistency.data import read_dataset_list
from sim_consistency.errors import ConfigError
from sim_consistency.launch import launch, launch_options_from_args
from sim_consistency.project import resolve_project_root
from sim_consistency.stages.cli import parse_stage_args, run_main
from sim_consistency.stages.soup_metrics.driver import (
    PART_MODULES,
    PARTS_CODE_VERSION,
    WorkItem,
    part_keys,
    plan,
    run,
    run_item,
)
from sim_consistency.stages.soup_metrics.generate import add_pair_arguments
from sim_consistency.stages.soup_metrics.study import (
    PARTS,
    SOUP_METHODS,
    SoupMetricsSettings,
    Study,
)
from sim_consistency.tracking import start_tracking

__all__ = [
    "PARTS",
    "PARTS_CODE_VERSION",
    "PART_MODULES",
    "SOUP_METHODS",
    "SoupMetricsSettings",
    "Study",
    "WorkItem",
    "add_arguments",
    "main",
    "part_keys",
    "plan",
    "run",
    "run_item",
    "settings_from_args",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this stage's own flags (the shared ones come from :mod:`stages.cli`)."""
    parser.add_argument("--soup", nargs="+", default=[], help="soup variant ids (default: all)")
    parser.add_argument("--base", default=None, help="pretrained θ_0 (default: role=pretrained)")
    parser.add_argument("--ood_datasets", nargs="+", default=[], help="datasets counted as OOD")
    parser.add_argument("--split", default="test", help="split the metrics are computed on")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    add_pair_arguments(parser)
    parser.add_argument("--purity_block", default=None, help="block for purity (default: last)")
    parser.add_argument("--purity_weight", default=None, help="projection weight for neuron purity")
    parser.add_argument("--retention_ks", nargs="+", type=int, default=[], help="dims kept")
    parser.add_argument(
        "--purity_models", nargs="+", default=[], help="purity models (default: soups + base)"
    )
    parser.add_argument(
        "--probe_seed", type=int, default=0, help="seed of the probe results read (and purity)"
    )


def settings_from_args(args: argparse.Namespace) -> SoupMetricsSettings:
    """Validate parsed flags into :class:`SoupMetricsSettings`."""
    root = resolve_project_root(args.project_root)
    datasets = tuple(read_dataset_list(args.datasets))
    unknown_ood = sorted(set(args.ood_datasets) - set(datasets))
    if unknown_ood:
        raise ConfigError(
            f"--ood_datasets {unknown_ood} are not among --datasets {list(datasets)}."
        )
    if args.n_alphas < 3:
        raise ConfigError(f"--n_alphas: needs at least 3 points (got {args.n_alphas}).")
    return SoupMetricsSettings(
        project_root=root,
        models_config=Path(args.models_config).resolve(),
        datasets=datasets,
        soups=tuple(args.soup),
        base=args.base,
        ood_datasets=tuple(args.ood_datasets),
        split=args.split,
        parts=tuple(p for p in PARTS if p in args.parts),
        interpolate=tuple(args.interpolate),
        barrier_models=tuple(args.barrier_models),
        n_alphas=args.n_alphas,
        purity_block=args.purity_block,
        purity_weight=args.purity_weight,
        retention_ks=tuple(args.retention_ks),
        purity_models=tuple(args.purity_models),
        probe_seed=args.probe_seed,
        force=args.force,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/soup_metrics.py``."""
    args = parse_stage_args(__doc__, add_arguments, argv)

    def body() -> int:
        settings = settings_from_args(args)
        options = launch_options_from_args(args)  # validated before any work starts
        with start_tracking(
            args.wandb, stage="soup_metrics", config=asdict(settings), location=settings.location
        ) as tracker:
            items = plan(settings)  # every input checked here, before any job starts
            report = launch(
                partial(run_item, settings),
                items,
                stage="soup_metrics",
                location=settings.location,
                options=options,
                label=lambda _: "soup_metrics",
                outputs=lambda _: [settings.out_dir / "summary.json"],
            )
            if report.is_success and report.results():
                summary = report.results()[0]
                tracker.log_metrics({"n_parts": len(summary["parts"])})
                accuracy = settings.out_dir / "accuracy.csv"
                if accuracy.is_file():
                    tracker.log_table("accuracy", pd.read_csv(accuracy))
                print(f"soup metrics: {', '.join(summary['parts'])} -> {settings.out_dir}")
            elif not items:
                print(f"soup metrics: up to date -> {settings.out_dir}")
        if args.launcher != "local":
            print(report.summary())
        return 0 if report.is_success else 1

    return run_main(body)
