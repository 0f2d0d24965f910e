"""The soup-metrics stage's settings and the soup-study flags it shares with ``build_variants``.

Cheap to import (``--help`` of both stages): the runtime generates their parsers from these
dataclasses; the parts and their inputs live in the other modules of this package.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

from sim_consistency.errors import ConfigError
from sim_consistency.runtime import Datasets, Force, Launcher, StageSettings, Wandb, option

__all__ = ["PARTS", "SoupMetricsSettings", "SoupStudyPaths", "model_pair"]

#: The parts of the stage, in the order they run.
PARTS: tuple[str, ...] = (
    "accuracy",
    "cka",
    "weights",
    "monosoup",
    "barriers",
    "branching",
    "purity",
)


def model_pair(text: str) -> tuple[str, str]:
    """argparse type of ``MODEL_A:MODEL_B``."""
    a, sep, b = text.partition(":")
    if not sep or not a or not b:
        raise argparse.ArgumentTypeError(f"expected MODEL_A:MODEL_B (got {text!r})")
    return a, b


@dataclass(frozen=True, kw_only=True)
class SoupStudyPaths(StageSettings):
    """The interpolation paths of a soup study: ``build_variants --generate`` writes their
    points as variants, ``soup_metrics`` reads their barriers (the same flags on both)."""

    interpolate: tuple[tuple[str, str], ...] = option(
        "A:B interpolation paths", default=(), nargs="+", type=model_pair, metavar="A:B"
    )
    barrier_models: tuple[str, ...] = option(
        "models whose every pair is interpolated", default=(), nargs="+"
    )
    n_alphas: int = option("interpolation grid size", default=11, type=int)

    def validated(self):
        s = super().validated()
        if s.n_alphas < 3:
            raise ConfigError(f"--n_alphas: needs at least 3 points (got {s.n_alphas}).")
        return replace(s, interpolate=tuple((a, b) for a, b in s.interpolate))


@dataclass(frozen=True, kw_only=True)
class SoupMetricsSettings(SoupStudyPaths, Datasets, Force, Launcher, Wandb):
    """Everything a soup-metrics run depends on (picklable for SLURM)."""

    models_config: Path = option(
        "models config JSON (configs/models/*.json)", default=None, required=True
    )
    soups: tuple[str, ...] = option(
        "soup variant ids", default=(), flag="--soup", nargs="+", shown_default="all"
    )
    base: str | None = option(
        "pretrained θ_0", default=None, shown_default="the entry with role=pretrained"
    )
    ood_datasets: tuple[str, ...] = option("datasets counted as OOD", default=(), nargs="+")
    split: str = option("split the metrics are computed on", default="test")
    parts: tuple[str, ...] = option("parts to compute", default=PARTS, nargs="+", choices=PARTS)
    purity_block: str | None = option("block for purity", default=None, shown_default="last")
    purity_weight: str | None = option("projection weight for neuron purity", default=None)
    retention_ks: tuple[int, ...] = option(
        "dimensions kept in the retention sweep", default=(), nargs="+", type=int
    )
    purity_models: tuple[str, ...] = option(
        "purity models", default=(), nargs="+", shown_default="soups + base"
    )
    probe_seed: int = option("seed of the probe results read (and purity)", default=0, type=int)
    n_bootstrap: int = option(
        "paired bootstrap replicates over test images (soup vs ingredients, branching)",
        default=10_000,
        type=int,
    )
    ci_seed: int = option("seed of the paired bootstrap", default=0, type=int, shown_default="0")

    @property
    def out_dir(self) -> Path:
        return self.location.soup_metrics

    def validated(self) -> SoupMetricsSettings:
        s = super().validated()
        if s.models_config is None:
            raise ConfigError("--models_config is required.")
        if s.n_bootstrap < 10:
            raise ConfigError(f"--n_bootstrap: at least 10 (got {s.n_bootstrap}).")
        unknown_ood = sorted(set(s.ood_datasets) - set(s.datasets))
        if unknown_ood:
            raise ConfigError(
                f"--ood_datasets {unknown_ood} are not among --datasets {list(s.datasets)}."
            )
        return replace(
            s,
            models_config=Path(s.models_config).resolve(),
            parts=tuple(p for p in PARTS if p in s.parts),
        )
