"""The soup study a run analyses: settings, models, and the exact upstream commands.

:class:`SoupMetricsSettings` is what the user asked for; :class:`Study` resolves it against the
models config once (soups and their ingredients, the base, the models of the accuracy table)
and knows, for every input a part reads, which command of the pipeline produces it
(:class:`Commands`), so that a missing input is reported as the command to run.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from sim_consistency.config import ModelSpec, load_models_config
from sim_consistency.errors import ConfigError
from sim_consistency.io import atomic_write_text
from sim_consistency.merging.generate import BRANCH_KEYS, branching_runs, is_generated
from sim_consistency.project import ProjectLocation
from sim_consistency.stages.soup_metrics.settings import PARTS, SoupMetricsSettings

__all__ = [
    "MONOSOUP_METHODS",
    "PARTS",
    "SOUP_METHODS",
    "Commands",
    "SoupMetricsSettings",
    "Study",
    "write_csv",
]

log = logging.getLogger("sim_consistency.soup_metrics")

#: Variant methods that make a soup of several ingredients.
SOUP_METHODS: frozenset[str] = frozenset({"uniform", "weighted", "greedy", "pruned"})
#: Variant methods whose recipe carries MonoSoup per-layer statistics.
MONOSOUP_METHODS: frozenset[str] = frozenset({"monosoup", "highonly", "lowonly"})


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """Write a tidy table atomically (no index)."""
    atomic_write_text(path, table.to_csv(index=False))
    log.info("wrote %s (%d rows)", path, len(table))


@dataclass(frozen=True)
class Commands:
    """The pipeline commands that produce a soup study's inputs, with the run's own flags."""

    settings: SoupMetricsSettings

    def _head(self, script: str, models_config: Path | None = None) -> list[str]:
        config = models_config or self.settings.models_config
        return [
            "python",
            f"scripts/{script}.py",
            "--project_root",
            str(self.settings.project_root),
            "--models_config",
            str(config),
        ]

    @staticmethod
    def _line(argv: Sequence[str]) -> str:
        return shlex.join(argv)

    def build(self, model_ids: Sequence[str]) -> str:
        """``build_variants`` for these variants."""
        return self._line([*self._head("build_variants"), "--model_key", *model_ids])

    def generate(self, specs: Mapping[str, ModelSpec]) -> str:
        """``build_variants --generate``: interpolation points and branching soups."""
        s = self.settings
        config = s.models_config
        has_generated = any(is_generated(spec) for spec in specs.values())
        out = config if has_generated else s.location.models / "generated" / f"{config.stem}.json"
        argv = [*self._head("build_variants"), "--generate", str(out)]
        if s.interpolate:
            argv += ["--interpolate", *(f"{a}:{b}" for a, b in s.interpolate)]
        if s.barrier_models:
            argv += ["--barrier_models", *s.barrier_models]
        argv += ["--n_alphas", str(s.n_alphas)]
        line = self._line(argv)
        if not has_generated:
            line += f"; then pass --models_config {shlex.quote(str(out))} to the later stages"
        return line

    def extract(
        self, model_ids: Sequence[str], datasets: Sequence[str], splits: Sequence[str]
    ) -> str:
        """``feature_extraction`` for these models, datasets and splits."""
        return self._line(
            [
                *self._head("feature_extraction"),
                "--datasets",
                *datasets,
                "--splits",
                *dict.fromkeys(splits),
                "--model_key",
                *model_ids,
            ]
        )

    def probe(self, model_ids: Sequence[str], datasets: Sequence[str]) -> str:
        """``single_model_evaluation`` (fast protocol, the run's probe seed)."""
        argv = [
            *self._head("single_model_evaluation"),
            "--datasets",
            *datasets,
            "--model_key",
            *model_ids,
            "--protocol",
            "fast",
            "--seeds",
            str(self.settings.probe_seed),
        ]
        if self.settings.split != "test":
            argv += ["--test_split", self.settings.split]
        return self._line(argv)

    def layer_cka(self, model_ids: Sequence[str], datasets: Sequence[str]) -> str:
        """``layer_cka`` with every pair of these models."""
        return self._line(
            [
                *self._head("layer_cka"),
                "--datasets",
                *datasets,
                "--model_key",
                *model_ids,
                "--reference",
                model_ids[0],
                "--pairs",
                "all",
                "--split",
                self.settings.split,
            ]
        )


@dataclass
class Study:
    """A run's settings resolved against its models config (loaded once)."""

    settings: SoupMetricsSettings
    specs: Mapping[str, ModelSpec] = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.specs = load_models_config(s.models_config, base_dir=s.project_root)
        if self.base is not None and self.base not in self.specs:
            raise ConfigError(
                f"--base: unknown model id {self.base!r}. Known: {', '.join(self.specs)}."
            )
        unknown = [m for m in s.purity_models if m not in self.specs]
        if unknown:
            raise ConfigError(f"--purity_models: unknown model id(s) {unknown}.")

    @property
    def location(self) -> ProjectLocation:
        return self.settings.location

    @property
    def out_dir(self) -> Path:
        return self.settings.out_dir

    @cached_property
    def commands(self) -> Commands:
        return Commands(self.settings)

    @cached_property
    def user_specs(self) -> dict[str, ModelSpec]:
        """The config's entries except the generated ones (interpolation points, branching)."""
        return {m: s for m, s in self.specs.items() if not is_generated(s)}

    @cached_property
    def soups(self) -> dict[str, list[str]]:
        """``{soup_id: ingredient ids}`` of the requested (default: all user) soups."""
        ids = list(self.settings.soups) or [
            m
            for m, s in self.user_specs.items()
            if s.variant is not None and s.variant.method in SOUP_METHODS
        ]
        soups: dict[str, list[str]] = {}
        for soup_id in ids:
            spec = self.specs.get(soup_id)
            if spec is None:
                raise ConfigError(
                    f"--soup: unknown model id {soup_id!r}. Known: {', '.join(self.specs)}."
                )
            if spec.variant is None or spec.variant.method not in SOUP_METHODS:
                raise ConfigError(
                    f"--soup {soup_id!r}: not a soup (source {spec.source!r}"
                    + (f", method {spec.variant.method!r}" if spec.variant else "")
                    + f"); soups are variants with method in {sorted(SOUP_METHODS)}."
                )
            soups[soup_id] = list(spec.variant.options["ingredients"])
        return soups

    @cached_property
    def default_base(self) -> str | None:
        """The one model with metadata ``role: pretrained`` (None if not exactly one)."""
        roles = [m for m, s in self.user_specs.items() if s.metadata.get("role") == "pretrained"]
        return roles[0] if len(roles) == 1 else None

    @property
    def base(self) -> str | None:
        return self.settings.base or self.default_base

    @cached_property
    def accuracy_models(self) -> list[str]:
        """Soups, their ingredients, the base, and every other user variant (MonoSoup and its
        ablations, WiSE-FT, TIES, …) with the models it is built from."""
        variants = {m: s.variant for m, s in self.user_specs.items() if s.variant is not None}
        others = [m for m in variants if m not in self.soups]
        inputs = [r for m in others for r in variants[m].references()]
        ingredients = [i for ing in self.soups.values() for i in ing]
        base = [self.base] if self.base else []
        return list(dict.fromkeys([*self.soups, *ingredients, *base, *others, *inputs]))

    @cached_property
    def purity_models(self) -> list[str]:
        s = self.settings
        base = [self.base] if self.base else []
        return list(s.purity_models) or [*self.soups, *base] or self.accuracy_models

    @cached_property
    def branching_runs(self) -> pd.DataFrame:
        """The branched runs declared in the user entries' metadata (see merging.generate)."""
        return pd.DataFrame(
            branching_runs(self.user_specs), columns=["run_group", "model_id", *BRANCH_KEYS]
        )

    def same_architecture(self, a: str, b: str) -> bool:
        """Whether two entries resolve to the same architecture recipe."""
        from sim_consistency.models.sources import architecture_spec

        return (
            architecture_spec(self.specs[a], self.specs).recipe()
            == architecture_spec(self.specs[b], self.specs).recipe()
        )

    def involved_models(self) -> list[str]:
        """Every user model a part may look at (their metadata goes into the summary)."""
        models = [*self.accuracy_models, *self.purity_models]
        models += [m for pair in self.settings.interpolate for m in pair]
        models += [*self.settings.barrier_models, *self.branching_runs["model_id"]]
        return [m for m in dict.fromkeys(models) if m in self.specs]

    def model_metadata(self) -> dict[str, dict[str, Any]]:
        """The involved models' free-form config metadata as plain JSON."""
        import json

        return json.loads(
            json.dumps(
                {m: dict(self.specs[m].metadata) for m in self.involved_models()},
                default=str,
                sort_keys=True,
            )
        )
