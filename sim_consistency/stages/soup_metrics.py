"""Stage: soups vs ingredients, weight geometry, barriers, basins and feature purity.

``python scripts/soup_metrics.py --models_config … --datasets … [--soup <variant_key> …]
[--base <model_id>] [--ood_datasets …] [--interpolate A:B …] [--barrier_models …]
[--parts …]`` writes tidy CSV + JSON and PNG + PDF figures under ``results/soup_metrics/``:

=================  =========================================================================
part               outputs (``results/soup_metrics/…``)
=================  =========================================================================
``accuracy``       ``accuracy.csv`` (every model × dataset: own head from cached logits, else a
                   fast linear probe), ``soup_vs_ingredients.{csv,json}``, ``id_ood.csv``,
                   ``id_vs_ood.{png,pdf}``
``cka``            ``block_cka.csv`` (soup vs each ingredient and the base, per block) and
                   ``block_cka_summary.csv`` (mean/min/max over ingredients per block)
``weights``        ``weight_pairs.csv``, ``weight_layers.csv``, ``weight_norms.csv``
``monosoup``       ``monosoup_layers.csv`` + ``monosoup_layers_<id>.{png,pdf}``
``barriers``       ``interpolation_curves.csv``, ``barriers.csv``, ``barrier_matrix_<kind>.csv``,
                   ``interpolation_<kind>.{png,pdf}``
``branching``      ``branching_{individual,pairwise_distances,soup_results}.csv``,
                   ``branching_summary.json`` + the study's three figures
``purity``         ``purity.csv`` (silhouette, feature-dimension and neuron purity) and
                   ``retention_sweep.csv`` + ``retention_sweep_<id>.{png,pdf}``
=================  =========================================================================

Function-space parts read the feature cache (running feature extraction first for whatever is
missing or stale — extraction skips what is up to date). Barriers and branching soups need
forward passes of models that are not in the config: the stage adds them as ``interpolate`` /
``uniform`` variant entries to a generated models config (``results/soup_metrics/
generated_models.json``) and runs them through the extraction machinery, so each interpolated
model is materialised and its logits cached like any other variant. ``summary.json`` records
every estimator and setting.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sim_consistency.config import ModelSpec, load_models_config
from sim_consistency.data import read_dataset_list
from sim_consistency.errors import ConfigError, MissingInputError
from sim_consistency.features import open_cache, read_cache_attrs
from sim_consistency.io import atomic_write_text
from sim_consistency.launch import launch, launch_options_from_args
from sim_consistency.models import create_model
from sim_consistency.probe import head_accuracy, linear_probe
from sim_consistency.project import ProjectLocation, dataset_slug, resolve_project_root
from sim_consistency.similarity import cka
from sim_consistency.soup_metrics import (
    BARRIER_DEFINITIONS,
    abs_cosine_stats,
    barrier,
    barrier_matrix,
    basin_summary,
    branching_tables,
    id_ood_averages,
    interpolation_alphas,
    orthogonality_scores,
    retention_sweep,
    silhouette,
    soup_improvement,
    weight_geometry,
)
from sim_consistency.soup_metrics.barriers import cross_entropy
from sim_consistency.soup_metrics.plots import (
    plot_barrier_curves,
    plot_branching,
    plot_id_vs_ood,
    plot_monosoup_layers,
    plot_retention_sweep,
    save_figure,
)
from sim_consistency.stages.cli import parse_stage_args, run_main
from sim_consistency.stages.feature_extraction import ExtractionSettings, run_model
from sim_consistency.threads import threads_metadata
from sim_consistency.tracking import start_tracking

__all__ = [
    "PARTS",
    "SOUP_METHODS",
    "SoupMetricsSettings",
    "add_arguments",
    "main",
    "rerun_reason",
    "run",
]

log = logging.getLogger("sim_consistency.soup_metrics")

#: Variant methods that make a soup of several ingredients.
SOUP_METHODS: frozenset[str] = frozenset({"uniform", "weighted", "greedy", "pruned"})
#: Variant methods whose recipe carries MonoSoup per-layer statistics.
MONOSOUP_METHODS: frozenset[str] = frozenset({"monosoup", "highonly", "lowonly"})
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
_BRANCH_KEYS = ("branch_epoch", "analysis_epoch")
#: Bumped when the stage's outputs change for the same inputs (part of the inputs key).
# 2: the fast probe's new solver; 3: its class-major layout; 4: its centred basis;
# 5: block CKA's Gram-space U-statistics accumulated without the diagonal (rounding level);
# 6: figure names keep every character of the ids, barrier columns named after their papers;
# 7: the fast probe's solver is torch.optim.LBFGS (strong Wolfe).
PARTS_CODE_VERSION = "7"


@dataclass(frozen=True)
class SoupMetricsSettings:
    """Everything a soup-metrics run depends on (validated by :func:`settings_from_args`)."""

    project_root: Path
    models_config: Path
    datasets: tuple[str, ...]
    soups: tuple[str, ...] = ()
    base: str | None = None
    ood_datasets: tuple[str, ...] = ()
    split: str = "test"
    parts: tuple[str, ...] = PARTS
    interpolate: tuple[tuple[str, str], ...] = ()
    barrier_models: tuple[str, ...] = ()
    n_alphas: int = 11
    bn_policy: str | None = None
    cka_unbiased: bool = False
    purity_block: str | None = None
    purity_weight: str | None = None
    retention_ks: tuple[int, ...] = ()
    purity_models: tuple[str, ...] = ()
    probe_seed: int = 0
    max_samples: int | None = None
    device: str = "auto"
    force: bool = False
    extraction: Mapping[str, Any] = field(default_factory=dict)

    @property
    def location(self) -> ProjectLocation:
        return ProjectLocation(self.project_root)

    @property
    def out_dir(self) -> Path:
        return self.location.soup_metrics


# -- models and caches --------------------------------------------------------------------------


def _soups(specs: Mapping[str, ModelSpec], requested: Sequence[str]) -> dict[str, list[str]]:
    """Return ``{soup_id: candidate ingredient ids}`` for the requested (default: all) soups."""
    ids = list(requested) or [
        m for m, s in specs.items() if s.variant is not None and s.variant.method in SOUP_METHODS
    ]
    soups: dict[str, list[str]] = {}
    for soup_id in ids:
        spec = specs.get(soup_id)
        if spec is None:
            raise ConfigError(f"--soup: unknown model id {soup_id!r}. Known: {', '.join(specs)}.")
        if spec.variant is None or spec.variant.method not in SOUP_METHODS:
            raise ConfigError(
                f"--soup {soup_id!r}: not a soup (source {spec.source!r}"
                + (f", method {spec.variant.method!r}" if spec.variant else "")
                + f"); soups are variants with method in {sorted(SOUP_METHODS)}."
            )
        soups[soup_id] = list(spec.variant.options["ingredients"])
    return soups


def _default_base(specs: Mapping[str, ModelSpec]) -> str | None:
    roles = [m for m, s in specs.items() if s.metadata.get("role") == "pretrained"]
    return roles[0] if len(roles) == 1 else None


def _extraction_settings(
    settings: SoupMetricsSettings, models_config: Path, splits: Sequence[str]
) -> ExtractionSettings:
    return ExtractionSettings(
        project_root=settings.project_root,
        models_config=models_config,
        model_ids=(),
        datasets=settings.datasets,
        splits=tuple(splits),
        max_samples=settings.max_samples,
        device=settings.device,
        **dict(settings.extraction),
    )


def _ensure_features(
    extraction: ExtractionSettings, model_ids: Sequence[str], datasets: Sequence[str]
) -> None:
    """Extract whatever is missing or stale for these models (up-to-date files are skipped)."""
    for model_id in dict.fromkeys(model_ids):
        run_model(replace(extraction, datasets=tuple(datasets)), model_id, progress=False)


def _cache(location: ProjectLocation, dataset: str, split: str, model_id: str):
    path = location.feature_file(dataset, split, model_id)
    if not path.is_file():
        raise MissingInputError(
            f"{path}: no feature cache for model {model_id!r} on {dataset}:{split}; run "
            "scripts/feature_extraction.py for it."
        )
    return open_cache(path)


def _last_block(location: ProjectLocation, dataset: str, split: str, model_id: str) -> str:
    with _cache(location, dataset, split, model_id) as cache:
        return cache.block_names[-1]


# -- accuracy ---------------------------------------------------------------------------------


def model_accuracy(
    location: ProjectLocation, model_id: str, dataset: str, split: str, *, seed: int = 0
) -> dict[str, Any]:
    """Return one model's accuracy on a dataset split: own head from logits, else a probe.

    The probe (protocol ``fast``) is trained on the ``train`` split's last-block features and
    scored on ``split``. ``n_samples`` is the number of images scored (one image is
    ``1 / n_samples`` of accuracy: the smallest difference the table can show).
    """
    with _cache(location, dataset, split, model_id) as cache:
        n_samples = len(cache.labels)
        if cache.has_logits:
            metrics = head_accuracy(cache.logits, cache.labels)
            return {"source": "head", "n_samples": n_samples, **_scalar_metrics(metrics)}
        block = cache.block_names[-1]
        X_test, y_test = cache.block(block), cache.labels
    with _cache(location, dataset, "train", model_id) as train:
        X_train, y_train = train.block(block), train.labels
    metrics = linear_probe(X_train, y_train, X_test, y_test, protocol="fast", seed=seed)
    return {"source": f"probe:{block}", "n_samples": n_samples, **_scalar_metrics(metrics)}


def _scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(metrics[k]) for k in ("top1", "top5", "balanced_acc") if k in metrics}


def _accuracy_models(
    specs: Mapping[str, ModelSpec], soups: Mapping[str, list[str]], base: str | None
) -> list[str]:
    """Return the models of the accuracy table: soups, their ingredients, the base, and every
    other variant of the config (MonoSoup and its ablations, WiSE-FT, TIES, …) with the models
    it is built from."""
    variants = {m: s.variant for m, s in specs.items() if s.variant is not None}
    others = [m for m in variants if m not in soups]
    inputs = [r for m in others for r in variants[m].references()]
    return list(
        dict.fromkeys(
            [
                *soups,
                *(i for ing in soups.values() for i in ing),
                *([base] if base else []),
                *others,
                *inputs,
            ]
        )
    )


def _accuracy_part(
    settings: SoupMetricsSettings,
    specs: Mapping[str, ModelSpec],
    soups: Mapping[str, list[str]],
    models: Sequence[str],
) -> pd.DataFrame:
    rows = [
        {
            "model_id": m,
            "dataset": d,
            "split": settings.split,
            "is_ood": d in settings.ood_datasets,
            "is_soup": m in soups,
            "method": variant.method if (variant := specs[m].variant) else specs[m].source,
            **model_accuracy(settings.location, m, d, settings.split, seed=settings.probe_seed),
        }
        for m in models
        for d in settings.datasets
    ]
    accuracy = pd.DataFrame(rows)
    out = settings.out_dir
    _write_csv(accuracy, out / "accuracy.csv")
    if soups:
        table = soup_improvement(accuracy, soups, ood_datasets=settings.ood_datasets)
        _write_csv(table, out / "soup_vs_ingredients.csv")
        atomic_write_text(
            out / "soup_vs_ingredients.json", table.to_json(orient="records", indent=1)
        )
    averages = id_ood_averages(accuracy, ood_datasets=settings.ood_datasets)
    _write_csv(averages, out / "id_ood.csv")
    if settings.ood_datasets and averages["ood_avg"].notna().any():
        id_sets = [d for d in settings.datasets if d not in settings.ood_datasets]
        figure = plot_id_vs_ood(
            averages, list(soups), id_datasets=id_sets, ood_datasets=settings.ood_datasets
        )
        save_figure(figure, out / "id_vs_ood")
    return accuracy


# -- block-wise CKA ---------------------------------------------------------------------------


def _cka_part(
    settings: SoupMetricsSettings, soups: Mapping[str, list[str]], base: str | None
) -> pd.DataFrame:
    rows = []
    for dataset in settings.datasets:
        for soup_id, ingredients in soups.items():
            references = [*ingredients, *([base] if base and base not in ingredients else [])]
            with _cache(settings.location, dataset, settings.split, soup_id) as soup_cache:
                soup_blocks = {b: soup_cache.block(b) for b in soup_cache.block_names}
                soup_keys = soup_cache.keys
            for ref in references:
                with _cache(settings.location, dataset, settings.split, ref) as ref_cache:
                    if not np.array_equal(ref_cache.keys, soup_keys):
                        raise ConfigError(
                            f"block CKA: {ref_cache.path} and the cache of {soup_id!r} hold "
                            "different rows; extract both with the same subset settings."
                        )
                    for block, X in soup_blocks.items():
                        if block not in ref_cache.block_names:
                            continue
                        rows.append(
                            {
                                "dataset": dataset,
                                "soup_id": soup_id,
                                "reference": ref,
                                "role": "base" if ref == base else "ingredient",
                                "block": block,
                                "block_index": list(soup_blocks).index(block),
                                "cka": cka(
                                    X, ref_cache.block(block), unbiased=settings.cka_unbiased
                                ),
                            }
                        )
    table = pd.DataFrame(rows)
    _write_csv(table, settings.out_dir / "block_cka.csv")
    if not table.empty:
        ingredient_rows = table[table["role"] == "ingredient"]
        summary = (
            ingredient_rows.groupby(["dataset", "soup_id", "block_index", "block"])["cka"]
            .agg(["mean", "min", "max"])
            .reset_index()
            .rename(columns={"mean": "cka_mean", "min": "cka_min", "max": "cka_max"})
        )
        _write_csv(summary, settings.out_dir / "block_cka_summary.csv")
    return table


# -- weights ----------------------------------------------------------------------------------


def _weight_sources(
    settings: SoupMetricsSettings, specs: Mapping[str, ModelSpec], model_ids: Sequence[str]
) -> dict[str, Any]:
    """Materialised variants stream from their safetensors; other models are built on the CPU."""
    from sim_consistency.merging import materialise_variant

    sources: dict[str, Any] = {}
    for model_id in model_ids:
        spec = specs[model_id]
        if spec.is_variant:
            sources[model_id] = materialise_variant(
                spec, specs, location=settings.location, device="cpu"
            )
        else:
            loaded = create_model(spec, specs, device="cpu", location=settings.location)
            sources[model_id] = {k: v.detach() for k, v in loaded.model.state_dict().items()}
    return sources


def _same_architecture(specs: Mapping[str, ModelSpec], a: str, b: str) -> bool:
    from sim_consistency.models.sources import architecture_spec

    return (
        architecture_spec(specs[a], specs).recipe() == architecture_spec(specs[b], specs).recipe()
    )


def _weights_part(
    settings: SoupMetricsSettings,
    specs: Mapping[str, ModelSpec],
    soups: Mapping[str, list[str]],
    base: str | None,
) -> None:
    """Weight geometry per soup: its ingredients, itself and the base (same architecture only)."""
    frames: dict[str, list[pd.DataFrame]] = {"pairs": [], "layers": [], "norms": []}
    for soup_id, ingredients in soups.items():
        soup_base = base if base and _same_architecture(specs, base, soup_id) else None
        model_ids = list(
            dict.fromkeys([*ingredients, soup_id, *([soup_base] if soup_base else [])])
        )
        geometry = weight_geometry(_weight_sources(settings, specs, model_ids), base=soup_base)
        for name in frames:
            frames[name].append(getattr(geometry, name).assign(soup_id=soup_id, base=soup_base))
    out = settings.out_dir
    for name, parts in frames.items():
        _write_csv(pd.concat(parts, ignore_index=True), out / f"weight_{name}.csv")


def _monosoup_part(settings: SoupMetricsSettings, specs: Mapping[str, ModelSpec]) -> None:
    from sim_consistency.merging import materialise_variant

    frames = []
    for model_id, spec in specs.items():
        if spec.variant is None or spec.variant.method not in MONOSOUP_METHODS:
            continue
        materialise_variant(spec, specs, location=settings.location, device="cpu")
        recipe = json.loads(settings.location.model_recipe_file(model_id).read_text())
        layers = pd.DataFrame(recipe.get("layers") or recipe.get("layer_stats") or [])
        if layers.empty:
            raise ConfigError(
                f"{settings.location.model_recipe_file(model_id)}: no per-layer statistics; "
                "rebuild the variant (python scripts/build_variants.py --force)."
            )
        layers.insert(0, "model_id", model_id)
        layers.insert(1, "method", spec.variant.method)
        frames.append(layers)
        options = spec.variant.options
        title = f"{model_id} ({spec.variant.method}, {options['base']} → {options['finetuned']})"
        save_figure(
            plot_monosoup_layers(layers, title=title),
            settings.out_dir / f"monosoup_layers_{model_id}",
        )
    if frames:
        _write_csv(pd.concat(frames, ignore_index=True), settings.out_dir / "monosoup_layers.csv")


# -- generated variants (interpolation points, branching soups) --------------------------------


def _generated_config(
    settings: SoupMetricsSettings, entries: Mapping[str, Mapping[str, Any]]
) -> Path:
    """Write the user's models config plus ``entries`` to ``generated_models.json``."""
    raw = json.loads(settings.models_config.read_text())
    clash = sorted(set(raw) & set(entries))
    if clash:
        raise ConfigError(
            f"{settings.models_config}: ids {clash} are reserved for models the soup-metrics "
            "stage generates; rename them."
        )
    path = settings.out_dir / "generated_models.json"
    atomic_write_text(path, json.dumps({**raw, **entries}, indent=1))
    return path


def _alpha_tag(alpha: float) -> str:
    return f"{alpha:.3f}".replace(".", "p")


def interpolation_entries(
    pairs: Sequence[tuple[str, str]], alphas: Iterable[float], bn_policy: str | None
) -> dict[str, dict[str, Any]]:
    """Return generated ``interpolate`` variant entries ``{id: entry}`` for every pair × α."""
    entries = {}
    for a, b in pairs:
        for alpha in alphas:
            variant: dict[str, Any] = {
                "method": "interpolate",
                "base": a,
                "finetuned": b,
                "alpha": float(alpha),
            }
            if bn_policy:
                variant["bn_policy"] = bn_policy
            entries[f"interp__{a}__{b}__{_alpha_tag(alpha)}"] = {
                "variant": variant,
                "metadata": {"generated_by": "soup_metrics", "pair": [a, b], "alpha": alpha},
            }
    return entries


def _logit_metrics(location: ProjectLocation, dataset: str, split: str, model_id: str):
    with _cache(location, dataset, split, model_id) as cache:
        if not cache.has_logits:
            raise ConfigError(
                f"barriers: {cache.path} has no logits; interpolation barriers need models with "
                "a classification head."
            )
        logits, labels = cache.logits, cache.labels
    top1 = head_accuracy(logits, labels)["top1"]
    return 1.0 - float(top1), cross_entropy(logits, labels)


def _barriers_part(settings: SoupMetricsSettings, specs: Mapping[str, ModelSpec]) -> None:
    pairs = list(settings.interpolate) + list(itertools.combinations(settings.barrier_models, 2))
    pairs = list(dict.fromkeys(pairs))
    if not pairs:
        log.info("barriers: no --interpolate / --barrier_models pairs, skipped")
        return
    for a, b in pairs:
        for m in (a, b):
            if m not in specs:
                raise ConfigError(f"--interpolate/--barrier_models: unknown model id {m!r}.")
    alphas = interpolation_alphas(settings.n_alphas)
    entries = interpolation_entries(pairs, alphas, settings.bn_policy)
    config = _generated_config(settings, entries)
    extraction = _extraction_settings(settings, config, [settings.split])
    _ensure_features(extraction, list(entries), settings.datasets)
    curves, rows = [], []
    for dataset in settings.datasets:
        for a, b in pairs:
            errors, losses = [], []
            for alpha in alphas:
                error, loss = _logit_metrics(
                    settings.location,
                    dataset,
                    settings.split,
                    f"interp__{a}__{b}__{_alpha_tag(alpha)}",
                )
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
    out = settings.out_dir
    _write_csv(curves_df, out / "interpolation_curves.csv")
    _write_csv(barriers_df, out / "barriers.csv")
    for kind in ("error", "loss"):
        save_figure(plot_barrier_curves(curves_df, kind), out / f"interpolation_{kind}")
    if len(settings.barrier_models) >= 2:
        for dataset in settings.datasets:
            for kind in ("error", "loss"):
                part = barriers_df[
                    (barriers_df["dataset"] == dataset) & (barriers_df["kind"] == kind)
                ]
                matrix = barrier_matrix(
                    settings.barrier_models,
                    {(r.model_a, r.model_b): r.barrier for r in part.itertuples(index=False)},
                )
                path = out / f"barrier_matrix_{kind}_{dataset_slug(dataset)}.csv"
                atomic_write_text(path, matrix.to_csv())


# -- branching ----------------------------------------------------------------------------------


def branching_runs(specs: Mapping[str, ModelSpec]) -> pd.DataFrame:
    """Return the branched runs declared in model metadata.

    A run is a non-variant entry whose metadata has non-null ``branch_epoch`` and
    ``analysis_epoch``; ``run_group`` (default ``"all"``) separates independent studies, e.g.
    one per architecture — runs of different groups are never souped together.
    """
    rows = [
        {
            "run_group": str(s.metadata.get("run_group") or "all"),
            "model_id": m,
            "branch_epoch": s.metadata["branch_epoch"],
            "analysis_epoch": s.metadata["analysis_epoch"],
        }
        for m, s in specs.items()
        if not s.is_variant and all(s.metadata.get(k) is not None for k in _BRANCH_KEYS)
    ]
    return pd.DataFrame(rows, columns=["run_group", "model_id", *_BRANCH_KEYS])


def _branching_soups(
    runs: pd.DataFrame, bn_policy: str | None
) -> tuple[dict[str, dict[str, Any]], pd.DataFrame]:
    """Generated uniform-soup entries, one per (run_group, branch_epoch, analysis_epoch)."""
    entries: dict[str, dict[str, Any]] = {}
    rows = []
    for (group, branch, analysis), part in runs.groupby(["run_group", *_BRANCH_KEYS], sort=True):
        soup_id = f"branchsoup__{group}__e{branch}__a{analysis}"
        variant: dict[str, Any] = {"method": "uniform", "ingredients": sorted(part["model_id"])}
        if bn_policy:
            variant["bn_policy"] = bn_policy
        entries[soup_id] = {
            "variant": variant,
            "metadata": {
                "generated_by": "soup_metrics",
                "run_group": group,
                "branch_epoch": branch,
                "analysis_epoch": analysis,
            },
        }
        rows.append(
            {
                "run_group": group,
                "branch_epoch": branch,
                "analysis_epoch": analysis,
                "soup_id": soup_id,
            }
        )
    return entries, pd.DataFrame(rows)


def _branching_part(settings: SoupMetricsSettings, specs: Mapping[str, ModelSpec]) -> None:
    runs = branching_runs(specs)
    if runs.empty:
        log.info("branching: no model declares branch_epoch/analysis_epoch metadata, skipped")
        return
    entries, soups = _branching_soups(runs, settings.bn_policy)
    config = _generated_config(settings, entries)
    extraction = _extraction_settings(settings, config, [settings.split])
    dataset = settings.datasets[0]
    _ensure_features(extraction, [*runs["model_id"], *entries], [dataset])
    acc = {
        m: model_accuracy(settings.location, m, dataset, settings.split, seed=settings.probe_seed)
        for m in [*runs["model_id"], *entries]
    }
    runs = runs.assign(accuracy=runs["model_id"].map(lambda m: acc[m]["top1"]), dataset=dataset)
    soups = soups.assign(soup_accuracy=soups["soup_id"].map(lambda m: acc[m]["top1"]))
    specs_all = load_models_config(config, base_dir=settings.project_root)
    groups = sorted(runs["run_group"].unique())
    collected: dict[str, list[pd.DataFrame]] = {}
    summaries = {}
    out = settings.out_dir
    for group in groups:
        group_runs = runs[runs["run_group"] == group]
        sources = _weight_sources(settings, specs_all, list(group_runs["model_id"]))
        geometry = weight_geometry(sources) if len(sources) >= 2 else None
        distances = (
            geometry.pairs
            if geometry is not None
            else pd.DataFrame(columns=["model_a", "model_b", "l2_distance"])
        )
        tables = branching_tables(
            group_runs.drop(columns="run_group"),
            distances,
            soups[soups["run_group"] == group].drop(columns="run_group"),
        )
        for name, table in tables.items():
            collected.setdefault(name, []).append(table.assign(run_group=group))
        if tables["soup_results"]["branch_epoch"].nunique() >= 2:
            n_test = int(acc[group_runs["model_id"].iloc[0]]["n_samples"])
            summaries[group] = basin_summary(tables["soup_results"], n_test=n_test)
            log.info("branching (%s): %s", group, summaries[group]["statement"])
        suffix = "" if len(groups) == 1 else f"_{group}"
        for stem, fig in plot_branching(tables, group=group, dataset=dataset).items():
            save_figure(fig, out / f"{stem}{suffix}")
    for name, frames in collected.items():
        _write_csv(pd.concat(frames, ignore_index=True), out / f"branching_{name}.csv")
    atomic_write_text(out / "branching_summary.json", json.dumps(summaries, indent=1))


# -- purity -----------------------------------------------------------------------------------


def _purity_part(
    settings: SoupMetricsSettings, specs: Mapping[str, ModelSpec], models: Sequence[str]
) -> None:
    rows, sweeps = [], []
    dataset = settings.datasets[0]
    for model_id in models:
        block = settings.purity_block or _last_block(settings.location, dataset, "train", model_id)
        with _cache(settings.location, dataset, "train", model_id) as train:
            X_train, y_train = train.block(block, dtype=np.float64), train.labels
        with _cache(settings.location, dataset, settings.split, model_id) as test:
            X_test, y_test = test.block(block, dtype=np.float64), test.labels
        row = {
            "model_id": model_id,
            "dataset": dataset,
            "block": block,
            "silhouette": silhouette(X_test, y_test, seed=settings.probe_seed),
        }
        row.update(
            {f"feature_{k}": v for k, v in abs_cosine_stats(X_train.T, skip_zero=True).items()}
        )
        scores = orthogonality_scores(X_train.T, skip_zero=True)
        if settings.purity_weight:
            weight = _named_weight(settings, specs, model_id)
            row.update(
                {f"neuron_{k}": v for k, v in abs_cosine_stats(weight, skip_zero=True).items()}
            )
            if weight.shape[0] == X_train.shape[1]:
                scores = orthogonality_scores(weight, skip_zero=True)
        rows.append(row)
        d = X_train.shape[1]
        ks = sorted(
            {k for k in (settings.retention_ks or (d // 8, d // 4, d // 2, d)) if 1 <= k <= d}
        )

        evaluate = partial(_probe_and_silhouette, y_train, y_test, settings.probe_seed)
        sweep = retention_sweep(X_train, X_test, scores, ks, evaluate).assign(
            model_id=model_id, dataset=dataset, block=block
        )
        sweeps.append(sweep)
        save_figure(
            plot_retention_sweep(sweep, title=f"{model_id}, block {block}, {dataset}"),
            settings.out_dir / f"retention_sweep_{model_id}",
        )
    _write_csv(pd.DataFrame(rows), settings.out_dir / "purity.csv")
    _write_csv(pd.concat(sweeps, ignore_index=True), settings.out_dir / "retention_sweep.csv")


def _probe_and_silhouette(
    y_train: np.ndarray, y_test: np.ndarray, seed: int, X_train: np.ndarray, X_test: np.ndarray
) -> dict[str, float]:
    """Fast-probe top-1 and silhouette of one kept feature subset (the retention sweep's score)."""
    probe = linear_probe(X_train, y_train, X_test, y_test, protocol="fast", seed=seed)
    return {"top1": float(probe["top1"]), "silhouette": silhouette(X_test, y_test, seed=seed)}


def _named_weight(
    settings: SoupMetricsSettings, specs: Mapping[str, ModelSpec], model_id: str
) -> np.ndarray:
    source = _weight_sources(settings, specs, [model_id])[model_id]
    if isinstance(source, Path):
        from safetensors import safe_open

        with safe_open(str(source), framework="pt") as handle:
            names = list(handle.keys())
            tensor = (
                handle.get_tensor(settings.purity_weight)
                if settings.purity_weight in names
                else None
            )
    else:
        names = list(source)
        tensor = source.get(settings.purity_weight)
    if tensor is None or tensor.ndim < 2:
        raise ConfigError(
            f"--purity_weight {settings.purity_weight!r}: not a ≥2-D tensor of model {model_id!r}. "
            f"Matrix tensors: {', '.join(n for n in names if n.endswith('weight'))[:400]}…"
        )
    return tensor.detach().to(torch.float64).reshape(tensor.shape[0], -1).numpy()


# -- driver -----------------------------------------------------------------------------------


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, table.to_csv(index=False))
    log.info("wrote %s (%d rows)", path, len(table))


def _previous_summary(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _model_metadata(specs: Mapping[str, ModelSpec]) -> dict[str, dict[str, Any]]:
    """Each model's free-form config metadata as plain JSON (recorded in ``summary.json``)."""
    return json.loads(
        json.dumps({m: dict(s.metadata) for m, s in specs.items()}, default=str, sort_keys=True)
    )


def _rooted_recipe(spec: ModelSpec, root: Path) -> dict[str, Any]:
    """``spec.recipe()`` with file paths under the project root made relative to it (a moved
    root changes no key; the files' sizes and times are hashed separately)."""
    recipe = spec.recipe()
    for name in ("weights", "path"):
        value = recipe.get(name)
        if (
            isinstance(value, str)
            and Path(value).is_absolute()
            and Path(value).is_relative_to(root)
        ):
            recipe[name] = Path(value).relative_to(root).as_posix()
    return recipe


def _inputs_key(settings: SoupMetricsSettings, specs: Mapping[str, ModelSpec]) -> str:
    """Digest of everything the results depend on, so an unchanged rerun reuses them.

    Covers the settings, every model's recipe, the metadata the numbers do depend on (the
    default base from ``role``, the branched runs from ``run_group`` / ``branch_epoch`` /
    ``analysis_epoch``), every checkpoint file's size and modification time, every
    materialised variant's recipe and every feature cache's content key under the requested
    datasets (the stage's own generated models included). Other metadata only labels: an edit
    of it is a "metadata" refresh (:func:`rerun_reason`), not a recomputation.
    """
    parts: list[Any] = [
        # No absolute paths: the recipes stand for the config, the root is where we are.
        {
            k: str(v)
            for k, v in asdict(settings).items()
            if k not in ("force", "project_root", "models_config")
        },
        {m: _rooted_recipe(s, settings.project_root) for m, s in specs.items()},
        _default_base(specs),
        branching_runs(specs).to_dict("records"),
        PARTS_CODE_VERSION,
    ]
    for model_id, spec in specs.items():
        if spec.path is not None and spec.path.is_file():
            stat = spec.path.stat()
            parts.append([model_id, stat.st_size, stat.st_mtime_ns])
    for recipe in sorted(settings.location.models.glob("*.json")):
        parts.append([recipe.name, hashlib.sha256(recipe.read_bytes()).hexdigest()])
    for dataset in settings.datasets:
        folder = settings.location.features / dataset_slug(dataset)
        for cache in sorted(folder.glob("*/*.h5")):
            parts.append(
                [str(cache.relative_to(folder)), (read_cache_attrs(cache) or {}).get("content_key")]
            )
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def rerun_reason(
    settings: SoupMetricsSettings,
    specs: Mapping[str, ModelSpec],
    previous: Mapping[str, Any],
    inputs_key: str,
) -> str | None:
    """Why the results must be (re)built, as the other stages' planners say it.

    ``"forced"``, ``"missing"`` (no summary yet), ``"stale"`` (the inputs key changed),
    ``"metadata"`` (only metadata that labels models changed: ``summary.json`` is refreshed,
    no number is recomputed), or ``None`` (up to date).
    """
    if settings.force:
        return "forced"
    if not previous:
        return "missing"
    if previous.get("inputs_key") != inputs_key:
        return "stale"
    if previous.get("model_metadata") != _model_metadata(specs):
        return "metadata"
    return None


def run(settings: SoupMetricsSettings) -> dict[str, Any]:
    """Run the requested parts; return the summary written to ``summary.json``."""
    specs = load_models_config(settings.models_config, base_dir=settings.project_root)
    soups = _soups(specs, settings.soups)
    base = settings.base or _default_base(specs)
    if base is not None and base not in specs:
        raise ConfigError(f"--base: unknown model id {base!r}. Known: {', '.join(specs)}.")
    models = _accuracy_models(specs, soups, base)
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    inputs_key = _inputs_key(settings, specs)
    summary_path = settings.out_dir / "summary.json"
    previous = _previous_summary(summary_path)
    reason = rerun_reason(settings, specs, previous, inputs_key)
    if reason is None:
        log.info("soup metrics: inputs unchanged (key %s…), results reused", inputs_key[:10])
        return previous
    if reason == "metadata":
        log.info("soup metrics: model metadata changed; summary relabelled (no recompute)")
        relabelled = {**previous, "model_metadata": _model_metadata(specs), "reason": reason}
        atomic_write_text(summary_path, json.dumps(relabelled, indent=1, default=str))
        return relabelled
    extraction = _extraction_settings(settings, settings.models_config, ["train", settings.split])
    if {"accuracy", "cka", "purity"} & set(settings.parts) and models:
        _ensure_features(extraction, models, settings.datasets)

    done: list[str] = []
    if "accuracy" in settings.parts and models:
        _accuracy_part(settings, specs, soups, models)
        done.append("accuracy")
    if "cka" in settings.parts and soups:
        _cka_part(settings, soups, base)
        done.append("cka")
    if "weights" in settings.parts and soups:
        _weights_part(settings, specs, soups, base)
        done.append("weights")
    if "monosoup" in settings.parts:
        _monosoup_part(settings, specs)
        done.append("monosoup")
    if "barriers" in settings.parts:
        _barriers_part(settings, specs)
        done.append("barriers")
    if "branching" in settings.parts:
        _branching_part(settings, specs)
        done.append("branching")
    purity_models = list(settings.purity_models) or [*soups, *([base] if base else [])] or models
    if "purity" in settings.parts and purity_models:
        unknown = [m for m in purity_models if m not in specs]
        if unknown:
            raise ConfigError(f"--purity_models: unknown model id(s) {unknown}.")
        _ensure_features(extraction, purity_models, settings.datasets[:1])
        _purity_part(settings, specs, purity_models)
        done.append("purity")

    summary = {
        # Recomputed, not the key from the start of the run: the run adds its own interpolation
        # variants and caches, which an unchanged rerun sees (and hashes) from the start.
        "inputs_key": _inputs_key(settings, specs),
        "reason": reason,
        "model_metadata": _model_metadata(specs),
        "parts": done,
        "soups": soups,
        "base": base,
        "datasets": list(settings.datasets),
        "ood_datasets": list(settings.ood_datasets),
        "split": settings.split,
        "estimators": {
            "accuracy": "own head from cached logits (top-1/top-5/balanced); models without a "
            "head: fast linear probe on the last block, trained on the train split",
            "improvement": "soup − mean / best ingredient accuracy, per dataset; ID/OOD: "
            "unweighted means over datasets",
            "block_cka": f"linear CKA, {'unbiased' if settings.cka_unbiased else 'biased'} HSIC, "
            "float64, features as cached (no normalisation)",
            "weights": "L2 distance / cosine over floating-point tensors, BatchNorm running "
            "statistics excluded; task vectors relative to the base",
            "barriers": {
                **BARRIER_DEFINITIONS,
                "curve": f"α grid of {settings.n_alphas} points, E = error (1 − top-1) and mean "
                f"cross-entropy of the logits on {settings.split}; BN policy "
                f"{settings.bn_policy or 'the method default'}",
                "matrix": "barrier_matrix_<kind>_<dataset>.csv holds the headline barrier",
            },
            "purity": "silhouette (cosine distance) of test features; mean/max/median/std |cos| "
            "between feature dimensions (train) and neuron weight rows; retention keeps the k "
            "dimensions with the lowest (high purity) or highest (low purity) mean |cos|",
        },
        "settings": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()
        },
        **threads_metadata(),
    }
    atomic_write_text(settings.out_dir / "summary.json", json.dumps(summary, indent=1, default=str))
    return summary


def _pair(text: str) -> tuple[str, str]:
    a, sep, b = text.partition(":")
    if not sep or not a or not b:
        raise argparse.ArgumentTypeError(f"expected MODEL_A:MODEL_B (got {text!r})")
    return a, b


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this stage's own flags (the shared ones come from :mod:`stages.cli`)."""
    parser.add_argument("--soup", nargs="+", default=[], help="soup variant ids (default: all)")
    parser.add_argument("--base", default=None, help="pretrained θ_0 (default: role=pretrained)")
    parser.add_argument("--ood_datasets", nargs="+", default=[], help="datasets counted as OOD")
    parser.add_argument("--split", default="test", help="split the metrics are computed on")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--interpolate", nargs="+", type=_pair, default=[], help="A:B pairs")
    parser.add_argument("--barrier_models", nargs="+", default=[], help="all-pairs barriers")
    parser.add_argument("--n_alphas", type=int, default=11, help="interpolation grid size")
    parser.add_argument(
        "--bn_policy",
        choices=["reset", "average", "from_anchor"],
        default=None,
        help="BatchNorm policy for generated interpolations/soups",
    )
    parser.add_argument("--cka_unbiased", action="store_true", help="unbiased HSIC for block CKA")
    parser.add_argument("--purity_block", default=None, help="block for purity (default: last)")
    parser.add_argument("--purity_weight", default=None, help="projection weight for neuron purity")
    parser.add_argument("--retention_ks", nargs="+", type=int, default=[], help="dims kept")
    parser.add_argument(
        "--purity_models", nargs="+", default=[], help="purity models (default: soups + base)"
    )
    parser.add_argument("--probe_seed", type=int, default=0)
    parser.add_argument("--max_samples", type=int, default=None, help="rows per split subset")


def settings_from_args(args: argparse.Namespace) -> SoupMetricsSettings:
    """Validate parsed flags into :class:`SoupMetricsSettings`."""
    root = resolve_project_root(args.project_root)
    datasets = tuple(read_dataset_list(args.datasets))
    unknown_ood = sorted(set(args.ood_datasets) - set(datasets))
    if unknown_ood:
        raise ConfigError(
            f"--ood_datasets {unknown_ood} are not among --datasets {list(datasets)}."
        )
    return SoupMetricsSettings(
        project_root=root,
        models_config=Path(args.models_config).resolve(),
        datasets=datasets,
        soups=tuple(args.soup),
        base=args.base,
        ood_datasets=tuple(args.ood_datasets),
        split=args.split,
        parts=tuple(args.parts),
        interpolate=tuple(args.interpolate),
        barrier_models=tuple(args.barrier_models),
        n_alphas=args.n_alphas,
        bn_policy=args.bn_policy,
        cka_unbiased=args.cka_unbiased,
        purity_block=args.purity_block,
        purity_weight=args.purity_weight,
        retention_ks=tuple(args.retention_ks),
        purity_models=tuple(args.purity_models),
        probe_seed=args.probe_seed,
        max_samples=args.max_samples,
        device=args.device,
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
            # One work item: the parts share the models' caches and weights, so on SLURM the
            # whole stage is one job (its forward passes go through the extraction machinery).
            report = launch(
                run,
                [settings],
                stage="soup_metrics",
                location=settings.location,
                options=options,
                label=lambda _: "soup_metrics",
                outputs=lambda s: [s.out_dir / "summary.json"],
            )
            if report.is_success and report.results():
                summary = report.results()[0]
                tracker.log_metrics({"n_parts": len(summary["parts"])})
                accuracy = settings.out_dir / "accuracy.csv"
                if accuracy.is_file():
                    tracker.log_table("accuracy", pd.read_csv(accuracy))
                print(f"soup metrics: {', '.join(summary['parts'])} -> {settings.out_dir}")
        if args.launcher != "local":
            print(report.summary())
        return 0 if report.is_success else 1

    return run_main(body)
