"""Generated variant entries of a soup study: interpolation paths and branching soups.

A barrier needs every point of the path ``(1 − α)·θ_A + α·θ_B`` as a model; the branching
analysis needs one uniform soup per group of runs branched at the same epoch. Both are plain
``variant`` entries (``interpolate`` / ``uniform``) added to a copy of the user's models config
(:func:`write_generated_config`), so that ``build_variants`` materialises them and
``feature_extraction`` caches them like any other model. Each generated entry carries
``metadata.generated_by = "build_variants"`` and ``metadata.generated = "interpolation" |
"branching"``; ids are derived from the inputs (:func:`interpolation_id`,
:func:`branching_soup_id`) so a reader can find them again from the same request.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sim_consistency.config.models import ModelSpec
from sim_consistency.errors import ConfigError
from sim_consistency.io import atomic_write_text

__all__ = [
    "BRANCH_KEYS",
    "GENERATED_BY",
    "SoupStudy",
    "barrier_pairs",
    "branching_runs",
    "branching_soup_entries",
    "branching_soup_id",
    "generated_entries",
    "interpolation_alphas",
    "interpolation_entries",
    "interpolation_id",
    "is_generated",
    "write_generated_config",
]

#: ``metadata.generated_by`` of every generated entry.
GENERATED_BY = "build_variants"
#: The metadata keys that declare a branched run (non-null on both).
BRANCH_KEYS: tuple[str, str] = ("branch_epoch", "analysis_epoch")


@dataclass(frozen=True)
class SoupStudy:
    """What to generate: interpolation paths (explicit pairs + all pairs of ``barrier_models``)
    on an ``n_alphas`` grid, and (``branching``) one soup per branched-run group; ``bn_policy``
    (None: the method default) applies to every generated entry, ``bn_split`` (the
    ``'<dataset>:<split>'`` on which running statistics are recomputed) with ``reset``."""

    interpolate: tuple[tuple[str, str], ...] = ()
    barrier_models: tuple[str, ...] = ()
    n_alphas: int = 11
    bn_policy: str | None = None
    bn_split: str | None = None
    branching: bool = True

    def __post_init__(self) -> None:
        if self.bn_policy == "reset" and self.bn_split is None:
            raise ConfigError(
                "--bn_policy reset needs --bn_split, the '<dataset>:<split>' on which the "
                "generated variants' running statistics are recomputed (e.g. wds/digits:train)."
            )


def _bn_options(bn_policy: str | None, bn_split: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if bn_policy:
        options["bn_policy"] = bn_policy
        if bn_policy == "reset" and bn_split is not None:
            options["bn_split"] = bn_split
    return options


def interpolation_alphas(n_points: int = 11) -> npt.NDArray[np.float64]:
    """Return ``n_points`` evenly spaced α in [0, 1], endpoints included (default 11)."""
    if n_points < 3:
        raise ConfigError(
            f"interpolation grid: needs at least 3 points to see a barrier (got {n_points})."
        )
    return np.linspace(0.0, 1.0, n_points)


def barrier_pairs(
    interpolate: Sequence[tuple[str, str]], barrier_models: Sequence[str]
) -> list[tuple[str, str]]:
    """Return the interpolation pairs: explicit ones, then every pair of ``barrier_models``."""
    return list(dict.fromkeys([*interpolate, *itertools.combinations(barrier_models, 2)]))


def _alpha_tag(alpha: float) -> str:
    return f"{alpha:.3f}".replace(".", "p")


def interpolation_id(a: str, b: str, alpha: float) -> str:
    """Return the id of the generated point α of the path from ``a`` to ``b``."""
    return f"interp__{a}__{b}__{_alpha_tag(alpha)}"


def interpolation_entries(
    pairs: Sequence[tuple[str, str]],
    alphas: Iterable[float],
    bn_policy: str | None,
    *,
    bn_split: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Return ``interpolate`` variant entries ``{id: entry}`` for every pair × α."""
    entries = {}
    for a, b in pairs:
        for alpha in alphas:
            variant: dict[str, Any] = {
                "method": "interpolate",
                "base": a,
                "finetuned": b,
                "alpha": float(alpha),
                **_bn_options(bn_policy, bn_split),
            }
            entries[interpolation_id(a, b, alpha)] = {
                "variant": variant,
                "metadata": {
                    "generated_by": GENERATED_BY,
                    "generated": "interpolation",
                    "pair": [a, b],
                    "alpha": float(alpha),
                },
            }
    return entries


def branching_runs(
    entries: Mapping[str, ModelSpec] | Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Return the branched runs declared in model metadata, one dict per run.

    A run is a non-variant entry whose metadata has non-null ``branch_epoch`` and
    ``analysis_epoch``; ``run_group`` (default ``"all"``) separates independent studies, e.g.
    one per architecture — runs of different groups are never souped together. ``entries`` are
    loaded specs or the raw JSON entries of a models config.
    """
    runs = []
    for model_id, entry in entries.items():
        if isinstance(entry, ModelSpec):
            metadata, is_variant = entry.metadata, entry.is_variant
        else:
            metadata, is_variant = entry.get("metadata") or {}, "variant" in entry
        if is_variant or any(metadata.get(k) is None for k in BRANCH_KEYS):
            continue
        runs.append(
            {
                "run_group": str(metadata.get("run_group") or "all"),
                "model_id": model_id,
                "branch_epoch": metadata["branch_epoch"],
                "analysis_epoch": metadata["analysis_epoch"],
            }
        )
    return runs


def branching_soup_id(group: str, branch_epoch: Any, analysis_epoch: Any) -> str:
    """Return the id of the generated uniform soup of one (group, branch, analysis) cell."""
    return f"branchsoup__{group}__e{branch_epoch}__a{analysis_epoch}"


def branching_soup_entries(
    runs: Sequence[Mapping[str, Any]], bn_policy: str | None, *, bn_split: str | None = None
) -> dict[str, dict[str, Any]]:
    """Return uniform-soup entries, one per (run_group, branch_epoch, analysis_epoch), sorted."""
    cells: dict[tuple[str, Any, Any], list[str]] = {}
    for run in runs:
        cell = (run["run_group"], run["branch_epoch"], run["analysis_epoch"])
        cells.setdefault(cell, []).append(run["model_id"])
    entries: dict[str, dict[str, Any]] = {}
    for (group, branch, analysis), ids in sorted(cells.items(), key=lambda c: c[0]):
        variant: dict[str, Any] = {
            "method": "uniform",
            "ingredients": sorted(ids),
            **_bn_options(bn_policy, bn_split),
        }
        entries[branching_soup_id(group, branch, analysis)] = {
            "variant": variant,
            "metadata": {
                "generated_by": GENERATED_BY,
                "generated": "branching",
                "run_group": group,
                "branch_epoch": branch,
                "analysis_epoch": analysis,
            },
        }
    return entries


def generated_entries(
    specs: Mapping[str, ModelSpec], study: SoupStudy
) -> dict[str, dict[str, Any]]:
    """Return every entry ``study`` generates for the models of ``specs``.

    Raises:
        ConfigError: a pair names an unknown model.
    """
    pairs = barrier_pairs(study.interpolate, study.barrier_models)
    unknown = sorted({m for pair in pairs for m in pair} - set(specs))
    if unknown:
        raise ConfigError(
            f"--interpolate/--barrier_models: unknown model id(s) {unknown}. "
            f"Known: {', '.join(specs)}."
        )
    alphas = interpolation_alphas(study.n_alphas)
    bn = {"bn_policy": study.bn_policy, "bn_split": study.bn_split}
    entries = interpolation_entries(pairs, alphas, **bn)
    if study.branching:
        entries.update(branching_soup_entries(branching_runs(specs), **bn))
    return entries


def is_generated(spec: ModelSpec) -> bool:
    """Whether entry ``spec`` was generated (interpolation point or branching soup)."""
    return spec.metadata.get("generated_by") == GENERATED_BY


def write_generated_config(
    models_config: Path, entries: Mapping[str, Mapping[str, Any]], out: Path
) -> Path:
    """Write the user's models config plus ``entries`` to ``out`` (atomically); return ``out``.

    Entries of an earlier generation in ``models_config`` itself (a generated config passed
    back in, possibly as ``out``) are replaced, never duplicated.

    Raises:
        ConfigError: a user entry has a generated id.
    """
    raw = json.loads(Path(models_config).read_text())
    own = {
        m: e
        for m, e in raw.items()
        if (e.get("metadata") or {}).get("generated_by") != GENERATED_BY
    }
    clash = sorted(set(own) & set(entries))
    if clash:
        raise ConfigError(
            f"{models_config}: ids {clash} are reserved for generated soup-study variants; "
            "rename them."
        )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out), json.dumps({**own, **entries}, indent=1))
    return Path(out)
