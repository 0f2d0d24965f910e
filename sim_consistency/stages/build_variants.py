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

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from sim_consistency.errors import ConfigError
from sim_consistency.outputs import note_reused
from sim_consistency.runtime import (
    Device,
    Force,
    Launcher,
    Models,
    Stage,
    Threads,
    Wandb,
    option,
    run_stage,
)
from sim_consistency.stages.soup_metrics.settings import SoupStudyPaths

if TYPE_CHECKING:
    from sim_consistency.config import ModelSpec

__all__ = ["STAGE", "BuildSettings", "WorkItem", "main", "plan", "run_item"]

log = logging.getLogger("sim_consistency.build_variants")


@dataclass(frozen=True, kw_only=True)
class BuildSettings(SoupStudyPaths, Models, Device, Threads, Force, Launcher, Wandb):
    """Everything a build_variants run depends on (picklable for SLURM).

    Without ``--model_key`` every variant entry of the config is built; entries among
    ``--model_key`` that are not variants are logged and skipped. With ``--generate OUT`` the
    generate step runs first, while the settings are validated: ``OUT`` (the models config plus
    the soup study's generated variants) is written and becomes ``models_config``, so that
    ``--model_key`` and the plan see the generated entries.
    """

    generate: Path | None = option(
        "write the models config plus generated soup-study variants (interpolation points of "
        "--interpolate/--barrier_models, one uniform soup per group of branched runs) to "
        "OUT_JSON and build its variants; pass OUT_JSON to the later stages",
        default=None,
        metavar="OUT_JSON",
    )
    bn_policy: str | None = option(
        "BatchNorm policy of the generated variants",
        default=None,
        choices=("reset", "average", "from_anchor"),
        shown_default="the method's",
    )
    bn_split: str | None = option(
        "with --bn_policy reset: the DATASET:SPLIT on which running statistics are recomputed",
        default=None,
        metavar="DATASET:SPLIT",
    )

    def default_model_ids(self, specs: dict[str, ModelSpec]) -> list[str]:
        return [m for m, s in specs.items() if s.is_variant]

    def validated(self) -> BuildSettings:
        s = self._generated() if self.generate is not None else self
        s = super(BuildSettings, s).validated()
        specs = s.load_specs()
        plain = [m for m in s.model_ids if not specs[m].is_variant]
        if plain:
            log.info("not variants, nothing to build: %s", ", ".join(plain))
        return s

    def _generated(self) -> BuildSettings:
        """Run the generate step; return the settings with ``OUT`` as the models config."""
        from sim_consistency.merging.generate import SoupStudy
        from sim_consistency.stages.soup_metrics.generate import generate_config

        if self.models_config is None:
            raise ConfigError("--generate needs --models_config (the config it extends).")
        if self.n_alphas < 3:
            raise ConfigError(f"--n_alphas: needs at least 3 points (got {self.n_alphas}).")
        study = SoupStudy(
            interpolate=tuple((a, b) for a, b in self.interpolate),
            barrier_models=tuple(self.barrier_models),
            n_alphas=self.n_alphas,
            bn_policy=self.bn_policy,
            bn_split=self.bn_split,
        )
        out = generate_config(
            Path(self.models_config),
            Path(self.generate),  # type: ignore[arg-type]
            study,
            project_root=self.project_root,
        )
        return replace(self, models_config=out, generate=None)


@dataclass(frozen=True)
class WorkItem:
    """One variant to (re)build."""

    model_id: str
    output: Path
    reason: str  # "missing or stale" | "forced"


def plan(settings: BuildSettings) -> list[WorkItem]:
    """Return the variants to build, dependencies first (up-to-date ones are skipped, logged)."""
    from sim_consistency.config.models import dependency_order
    from sim_consistency.merging import is_materialised

    specs = settings.load_specs()
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
            note_reused(output)
            continue
        items.append(WorkItem(model_id, output, reason))
    return items


def run_item(settings: BuildSettings, item: WorkItem) -> Path:
    """Build one variant (referenced variants first) into ``models/``."""
    from sim_consistency.device import resolve_device
    from sim_consistency.merging import materialise_variant

    specs = settings.load_specs()
    return materialise_variant(
        specs[item.model_id],
        specs,
        location=settings.location,
        device=resolve_device(settings.device),
        force=item.reason == "forced",
    )


STAGE = Stage(
    name="build_variants",
    settings=BuildSettings,
    description="Materialise the variant entries of a models config (soups, MonoSoup, merges).",
    details="Writes models/<id>.safetensors + models/<id>.json for every selected variant and "
    "the variants it references, dependencies first; up-to-date variants are reused.",
    examples=(
        "python scripts/build_variants.py --models_config configs/models/demo.json",
        "python scripts/build_variants.py --models_config M.json --model_key soup_uniform --force",
        "python scripts/build_variants.py --models_config M.json --generate study.json "
        "--interpolate ft1:ft2 --n_alphas 11",
    ),
    plan=plan,
    run=run_item,
    outputs=lambda item: [item.output],
    label=lambda item: item.model_id,
    output_root=lambda settings: settings.location.models,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, plan, build; print a summary. Returns the exit code."""
    return run_stage(STAGE, argv)
