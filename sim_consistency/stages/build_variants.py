"""Stage: materialise the variant entries of a models config (soups, MonoSoup, merges).

``python scripts/build_variants.py --models_config … [--model_key …] [--force]`` writes
``models/<id>.safetensors`` + ``models/<id>.json`` for every selected variant entry (all of
them by default) and for the variants they reference, dependencies first.

Flow: :func:`plan` lists the variants whose stored variant key differs from the current one
(all with ``--force``); :func:`run_item` builds one through
:func:`~sim_consistency.merging.materialise_variant`, which writes atomically; the items run
here or as SLURM jobs (:func:`~sim_consistency.launch.launch`). On SLURM, a job whose variant
references another variant of the plan builds that one itself if its own job has not finished
(both write atomically, the same bytes). Non-variant
entries among ``--model_key`` are ignored (logged): they need no building.

The generate step (``--generate OUT --interpolate A:B … --barrier_models … --n_alphas N``) first
writes the models config plus a soup study's generated variants (interpolation points, branching
soups; :mod:`sim_consistency.stages.soup_metrics.generate`) to ``OUT`` and then builds ``OUT``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sim_consistency.config import load_models_config, select_models
from sim_consistency.config.models import dependency_order
from sim_consistency.launch import LaunchReport
from sim_consistency.merging import is_materialised, materialise_variant
from sim_consistency.project import ProjectLocation
from sim_consistency.stages.cli import launch_planned, parse_stage_args, run_main
from sim_consistency.stages.feature_extraction import resolve_device
from sim_consistency.stages.soup_metrics.generate import add_generate_arguments, generate_step
from sim_consistency.tracking import Tracker

__all__ = ["BuildSettings", "WorkItem", "add_arguments", "main", "plan", "run_item"]

log = logging.getLogger("sim_consistency.build_variants")


@dataclass(frozen=True)
class BuildSettings:
    """Everything a build_variants run depends on (picklable for SLURM)."""

    project_root: Path
    models_config: Path
    model_ids: tuple[str, ...]
    device: str = "auto"
    force: bool = False

    @property
    def location(self) -> ProjectLocation:
        return ProjectLocation(self.project_root)


@dataclass(frozen=True)
class WorkItem:
    """One variant to (re)build."""

    model_id: str
    output: Path
    reason: str  # "missing or stale" | "forced"


def plan(settings: BuildSettings) -> list[WorkItem]:
    """Return the variants to build, dependencies first (up-to-date ones are skipped, logged)."""
    specs = load_models_config(settings.models_config, base_dir=settings.project_root)
    items = []
    for model_id in dependency_order(specs, list(settings.model_ids)):
        spec = specs[model_id]
        if not spec.is_variant:
            continue
        output = settings.location.model_weights_file(model_id)
        if settings.force:
            reason = "forced" if model_id in settings.model_ids else None
        elif is_materialised(spec, specs, location=settings.location):
            reason = None
        else:
            reason = "missing or stale"
        if reason is None:
            log.info("%s: up to date, skipped", output)
            continue
        items.append(WorkItem(model_id, output, reason))
    return items


def run_item(settings: BuildSettings, item: WorkItem) -> Path:
    """Build one variant (referenced variants first) into ``models/``."""
    specs = load_models_config(settings.models_config, base_dir=settings.project_root)
    return materialise_variant(
        specs[item.model_id],
        specs,
        location=settings.location,
        device=resolve_device(settings.device),
        force=item.reason == "forced",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The generate step's flags (generated soup-study variants); the rest are shared."""
    add_generate_arguments(parser)


def settings_from_args(args: argparse.Namespace) -> BuildSettings:
    """Validate parsed flags into :class:`BuildSettings` (raises ConfigError)."""
    location = ProjectLocation.resolve(args.project_root)
    specs = load_models_config(args.models_config, base_dir=location.root)
    if args.model_key:
        model_ids = select_models(specs, args.model_key)
        plain = [m for m in model_ids if not specs[m].is_variant]
        if plain:
            log.info("not variants, nothing to build: %s", ", ".join(plain))
    else:
        model_ids = [m for m, s in specs.items() if s.is_variant]
    return BuildSettings(
        project_root=location.root,
        models_config=Path(args.models_config).resolve(),
        model_ids=tuple(model_ids),
        device=args.device,
        force=args.force,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, plan, build; print a summary. Returns the exit code."""
    args = parse_stage_args(__doc__, add_arguments, argv)

    def log_results(tracker: Tracker, items: list[WorkItem], report: LaunchReport) -> None:
        tracker.log_metrics({"n_built": len(report.results()), "n_failed": report.n_failed})
        tracker.log_table(
            "variants", [{"model_id": i.model_id, "output": str(i.output)} for i in items]
        )

    def body() -> int:
        generated = generate_step(args)  # --generate: the config plus generated variants
        if generated is not None:
            args.models_config = str(generated)
        settings = settings_from_args(args)
        items, report = launch_planned(
            args,
            settings,
            stage="build_variants",
            plan=plan,
            run_item=partial(run_item, settings),
            label=lambda item: item.model_id,
            outputs=lambda item: [item.output],
            log_results=log_results,
        )
        if args.launcher != "local":
            print(report.summary())
        print(
            f"build_variants: {len(report.results())} variant(s) built under "
            f"{settings.location.models} ({len(items)} planned)"
        )
        return 0 if report.is_success else 1

    return run_main(body)
