"""Stage: the Rep2Rep paper's analyses from the stored similarity matrices and feature caches.

``python scripts/analyses.py --models_config … --datasets A B … --similarity_config
configs/similarity/<name>.json [--analyses categories clustering …]`` reads
``model_similarities/<dataset_slug>/<metric_slug>/`` (and, for ``sample_size``, the feature
caches) and writes, per analysis and metric, ``results/analyses/<analysis>/<metric_slug>/``:

* ``categories`` — ``category_consistency.csv`` (per metadata field and category, the
  consistency of every dataset pair over the model pairs within the category),
  ``category_summary.csv``, ``anchor_consistency.csv`` (per anchor model and dataset pair, the
  correlation of its matrix rows), ``dataset_category_consistency.csv`` (with
  ``--dataset_categories``), boxplot figures;
* ``clustering`` — ``model_clusters.csv`` (per dataset, every model's flat cluster and leaf
  order), ``dendrogram_<dataset_slug>.png|.pdf``, and with ≥ 3 datasets ``dataset_clusters.csv``
  + ``dendrogram_datasets`` (datasets clustered by 1 − consistency);
* ``combined_gap`` — ``gap_vs_similarity.csv``, ``gap_summary.csv``, a scatter figure, from the
  combined-probe table ``--combined_probes`` (skipped, with the command that writes it, when
  absent);
* ``sample_size`` — per dataset ``<dataset_slug>/curves.csv`` (CKA on n sub-sampled rows per
  n, seed and pair), ``convergence.csv`` and ``curves.png|.pdf`` (CKA metrics only);
* ``random_sets`` — ``draws.csv`` (per k and draw: models, consistency summary),
  ``summary.csv`` and ``histogram.png|.pdf``.

Every folder ends with ``metadata.json`` holding its content key (inputs' keys + settings);
up-to-date folders are reused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sim_consistency.analysis import ANALYSES, analysis_dir
from sim_consistency.errors import ConfigError, MissingInputError
from sim_consistency.outputs import (
    METADATA_FILE,
    file_digest,
    folder_plan_reason,
    json_digest,
    stored_key,
)
from sim_consistency.project import ProjectLocation, dataset_slug
from sim_consistency.runtime import (
    Datasets,
    Force,
    Launcher,
    Models,
    Stage,
    Threads,
    Wandb,
    option,
    run_stage,
)
from sim_consistency.stages._similarity_io import (
    SIMILARITY_CODE_VERSION,
    cache_attrs,
    read_similarity_matrix,
    resolve_block,
    write_json,
)

if TYPE_CHECKING:
    import pandas as pd

    from sim_consistency.config.similarity import MetricSpec

__all__ = [
    "STAGE",
    "AnalysesSettings",
    "WorkItem",
    "default_combined_probes",
    "main",
    "plan",
    "run_item",
]

log = logging.getLogger("sim_consistency.analyses")

#: Bump when a change to the analysis code changes the numbers it writes.
ANALYSES_CODE_VERSION = "1"
#: Rep2Rep's model categories (its models config): objective, architecture class, training
#: data (``dataset_class``; ``training_data`` is accepted too) and size class.
DEFAULT_CATEGORY_FIELDS = (
    "objective",
    "architecture_class",
    "dataset_class",
    "training_data",
    "size_class",
)
#: The files each analysis writes in its folder (``metadata.json`` last).
OUTPUT_FILES: dict[str, tuple[str, ...]] = {
    "categories": ("category_consistency.csv", "category_summary.csv", "anchor_consistency.csv"),
    "clustering": ("model_clusters.csv",),
    "combined_gap": ("gap_vs_similarity.csv", "gap_summary.csv"),
    "sample_size": ("curves.csv", "convergence.csv"),
    "random_sets": ("draws.csv", "summary.csv"),
}
#: Analyses that compare datasets (need at least 2).
_CROSS_DATASET = ("categories", "random_sets")


def default_combined_probes(location: ProjectLocation) -> Path:
    """The combined-probe stage's pair table, ``--combined_probes``' default
    (:mod:`sim_consistency.probe.combined_table`)."""
    return location.linear_probe / "combined" / "combined_vs_single.csv"


@dataclass(frozen=True, kw_only=True)
class AnalysesSettings(Models, Datasets, Threads, Force, Launcher, Wandb):
    """Everything a run depends on; :meth:`validated` loads the metrics and the metadata."""

    similarity_config: Path = option(
        "configs/similarity/<name>.json: the metrics whose matrices are analysed",
        default=None,
        required=True,
    )
    biased_cka: bool = option(
        "CKA entries without 'unbiased' use the biased estimator (default: unbiased, as in "
        "Rep2Rep)",
        default=False,
    )
    analyses: tuple[str, ...] = option(
        "the analyses to run", default=ANALYSES, nargs="+", choices=ANALYSES
    )
    correlation: Literal["pearson", "spearman"] = option(
        "correlation of the consistency values", default="pearson", choices=("pearson", "spearman")
    )
    category_fields: tuple[str, ...] = option(
        "categories: model metadata fields to group by", default=DEFAULT_CATEGORY_FIELDS, nargs="+"
    )
    anchors: tuple[str, ...] = option(
        "categories: anchor models (their rows' consistency)", default=(), nargs="+",
        shown_default="every model",
    )  # fmt: skip
    dataset_categories: Path | None = option(
        "categories: JSON {dataset: category} or Rep2Rep's dataset_info.json "
        "({dataset: {'domain': …}})",
        default=None,
    )
    n_clusters: int = option("clustering: flat clusters cut from the tree", default=2, type=int)
    linkage: str = option(
        "clustering: scipy linkage method",
        default="average",
        choices=("average", "complete", "single", "weighted"),
    )
    combined_probes: Path | None = option(
        "combined_gap: CSV with dataset, model_a, model_b, combined_top1, top1_a, top1_b",
        default=None,
        shown_default="results/linear_probe/combined/combined_vs_single.csv",
    )
    split: str = option("sample_size: dataset split of the caches", default="test")
    block: str | None = option(
        "sample_size: block compared for every model",
        default=None,
        shown_default="as scripts/distance_matrix_computation.py",
    )
    normalize: bool = option(
        "sample_size: L2-normalise each sample's features first (as the matrices)",
        default=True,
        negatable=True,
    )
    sample_sizes: tuple[int, ...] = option(
        "sample_size: sample counts below the row count (all rows are always added)",
        default=(),
        nargs="+",
        type=int,
        shown_default="100, 200, … below the row count",
    )
    sample_seeds: tuple[int, ...] = option(
        "sample_size: seeds of the row draws", default=(0, 1, 2), nargs="+", type=int
    )
    set_sizes: tuple[int, ...] = option(
        "random_sets: model-set sizes k", default=(), nargs="+", type=int,
        shown_default="half of the models, at least 3",
    )  # fmt: skip
    n_draws: int = option("random_sets: draws per k", default=200, type=int)
    seed: int = option("random_sets: seed of the draws", default=0, type=int)
    #: Filled in by :meth:`validated`.
    metrics: tuple[MetricSpec, ...] = ()
    model_metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    dataset_category_map: Mapping[str, str] = field(default_factory=dict)

    def validated(self) -> AnalysesSettings:
        from sim_consistency.config.similarity import load_similarity_config

        s = super().validated()
        analyses = tuple(a for a in ANALYSES if a in s.analyses)
        cross = [a for a in analyses if a in _CROSS_DATASET]
        if cross and len(s.datasets) < 2:
            raise ConfigError(
                f"--datasets: {cross} compare datasets; give at least 2 (got {list(s.datasets)})."
            )
        if len(s.model_ids) < 3:
            raise ConfigError(
                f"--model_key: the analyses need at least 3 models (got {list(s.model_ids)})."
            )
        too_big = [k for k in s.set_sizes if not 3 <= k <= len(s.model_ids)]
        if "random_sets" in analyses and too_big:
            raise ConfigError(
                f"--set_sizes {too_big}: each k must be in 3..{len(s.model_ids)} (the models)."
            )
        if s.n_draws < 1:
            raise ConfigError(f"--n_draws {s.n_draws}: must be at least 1.")
        unknown = [a for a in s.anchors if a not in s.model_ids]
        if unknown:
            raise ConfigError(
                f"--anchors: {unknown} are not models of this run ({list(s.model_ids)})."
            )
        specs = s.load_specs()
        metadata = {m: dict(specs[m].metadata) for m in s.model_ids}
        if "categories" in analyses and not any(
            f in meta for meta in metadata.values() for f in s.category_fields
        ):
            raise ConfigError(
                f"--category_fields {list(s.category_fields)}: no model of the config has any "
                'of the metadata fields; set them in the models config (e.g. "objective": '
                '"supervised") or choose others.'
            )
        combined = s.combined_probes or default_combined_probes(s.location)
        return replace(
            s,
            analyses=analyses,
            metrics=tuple(load_similarity_config(s.similarity_config, biased_cka=s.biased_cka)),
            model_metadata=metadata,
            dataset_category_map=_read_dataset_categories(s.dataset_categories),
            combined_probes=Path(combined).resolve(),
            set_sizes=s.set_sizes or (max(3, len(s.model_ids) // 2),),
        )


def _read_dataset_categories(path: Path | None) -> dict[str, str]:
    """Return ``{dataset: category}`` from ``{dataset: category}`` or ``{dataset: {domain}}``."""
    if path is None:
        return {}
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"--dataset_categories {path}: not a readable JSON file ({exc})."
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"--dataset_categories {path}: expected a JSON object.")
    out = {}
    for dataset, value in raw.items():
        if isinstance(value, dict) and isinstance(value.get("domain"), str):
            out[dataset] = value["domain"]
        elif isinstance(value, str):
            out[dataset] = value
        else:
            raise ConfigError(
                f"--dataset_categories {path}: entry {dataset!r} must be a category string or "
                f"an object with a 'domain' string (got {value!r})."
            )
    return out


@dataclass(frozen=True)
class WorkItem:
    """One analysis of one metric (and, for ``sample_size``, one dataset)."""

    analysis: str
    slug: str
    spec: MetricSpec
    datasets: tuple[str, ...]
    inputs: tuple[Path, ...]  # matrix folders (per dataset) or cache files (per model)
    input_keys: tuple[str, ...]
    folder: Path
    content_key: str
    reason: str
    blocks: tuple[str, ...] = ()


def _matrix_inputs(settings: AnalysesSettings, slug: str) -> tuple[tuple[Path, ...], list[str]]:
    folders = tuple(settings.location.similarity_dir(d, slug) for d in settings.datasets)
    keys = []
    for folder in folders:
        key = stored_key(folder)
        if key is None:
            raise MissingInputError(
                f"{folder}: no complete similarity matrix (no {METADATA_FILE}); run "
                "scripts/distance_matrix_computation.py with this metric and dataset first."
            )
        keys.append(key)
    return folders, keys


def _settings_key(settings: AnalysesSettings, analysis: str) -> dict[str, Any]:
    """The settings that change one analysis's numbers."""
    per: dict[str, dict[str, Any]] = {
        "categories": {
            "fields": list(settings.category_fields),
            "metadata": {m: dict(v) for m, v in settings.model_metadata.items()},
            "anchors": list(settings.anchors),
            "dataset_categories": dict(settings.dataset_category_map),
            "correlation": settings.correlation,
        },
        "clustering": {"n_clusters": settings.n_clusters, "linkage": settings.linkage},
        "combined_gap": {},
        "sample_size": {
            "sizes": list(settings.sample_sizes),
            "seeds": list(settings.sample_seeds),
            "normalize": settings.normalize,
        },
        "random_sets": {
            "set_sizes": list(settings.set_sizes),
            "n_draws": settings.n_draws,
            "seed": settings.seed,
            "correlation": settings.correlation,
        },
    }
    return {
        "analysis": analysis,
        "model_ids": list(settings.model_ids),
        "code_version": [SIMILARITY_CODE_VERSION, ANALYSES_CODE_VERSION],
        **per[analysis],
    }


def plan(settings: AnalysesSettings) -> list[WorkItem]:
    """Return the (analysis, metric[, dataset]) items whose outputs are missing or stale."""
    from sim_consistency.similarity import metric_slug

    loc = settings.location
    items: list[WorkItem] = []
    for analysis in settings.analyses:
        if analysis == "combined_gap" and not Path(settings.combined_probes or "").is_file():
            from sim_consistency.analysis.combined_gap import PRODUCER

            log.warning(
                "combined_gap skipped: no combined-probe table at %s; produce it with %s "
                "(or pass --combined_probes).",
                settings.combined_probes,
                PRODUCER,
            )
            continue
        for spec in settings.metrics:
            slug = metric_slug(spec)
            if analysis == "sample_size":
                if spec.sim_method != "cka":
                    log.info("sample_size: %s is not CKA; skipped", slug)
                    continue
                items += _plan_sample_size(settings, spec, slug)
                continue
            folders, keys = _matrix_inputs(settings, slug)
            extra = []
            if analysis == "combined_gap":
                extra = [file_digest(settings.combined_probes)]  # type: ignore[arg-type]
            key = json_digest(
                {
                    "inputs": [list(p) for p in zip(settings.datasets, keys, strict=True)],
                    "extra_inputs": extra,
                    **_settings_key(settings, analysis),
                }
            )
            folder = analysis_dir(loc, analysis) / slug
            reason = folder_plan_reason(folder, key, OUTPUT_FILES[analysis], settings.force)
            if reason is not None:
                items.append(
                    WorkItem(
                        analysis,
                        slug,
                        spec,
                        settings.datasets,
                        folders,
                        tuple(keys),
                        folder,
                        key,
                        reason,
                    )  # fmt: skip
                )
    return items


def _plan_sample_size(settings: AnalysesSettings, spec: MetricSpec, slug: str) -> list[WorkItem]:
    loc = settings.location
    items = []
    for dataset in settings.datasets:
        attrs = cache_attrs(loc, dataset, settings.split, settings.model_ids)
        paths = tuple(loc.feature_file(dataset, settings.split, m) for m in settings.model_ids)
        keys = tuple(str(attrs[m].get("content_key", "")) for m in settings.model_ids)
        blocks = tuple(
            resolve_block(attrs[m], settings.block, path)
            for m, path in zip(settings.model_ids, paths, strict=True)
        )
        key = json_digest(
            {
                "inputs": [list(p) for p in zip(settings.model_ids, keys, strict=True)],
                "metric": spec.to_json(),
                "blocks": list(blocks),
                "split": settings.split,
                **_settings_key(settings, "sample_size"),
            }
        )
        folder = analysis_dir(loc, "sample_size") / slug / dataset_slug(dataset)
        reason = folder_plan_reason(folder, key, OUTPUT_FILES["sample_size"], settings.force)
        if reason is not None:
            items.append(
                WorkItem(
                    "sample_size",
                    slug,
                    spec,
                    (dataset,),
                    paths,
                    keys,
                    folder,
                    key,
                    reason,
                    blocks,
                )  # fmt: skip
            )
    return items


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    from sim_consistency.io import atomic_write_text

    atomic_write_text(path, frame.to_csv(index=False))


def _matrices(settings: AnalysesSettings, item: WorkItem) -> dict[str, pd.DataFrame]:
    wanted = set(settings.model_ids)
    out = {}
    for dataset, folder in zip(item.datasets, item.inputs, strict=True):
        frame = read_similarity_matrix(folder)
        keep = [m for m in frame.index if m in wanted]
        out[dataset] = frame.loc[keep, keep]
    return out


def _run_categories(settings: AnalysesSettings, item: WorkItem) -> dict[str, Any]:
    import warnings

    from sim_consistency.analysis import categories
    from sim_consistency.figures import save_figure
    from sim_consistency.similarity import consistency

    matrices = _matrices(settings, item)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = categories.category_consistency(
            matrices, settings.model_metadata, settings.category_fields, settings.correlation
        )
    notes = sorted({str(w.message) for w in caught})
    for note in notes:
        log.warning("%s", note)
    all_pairs = consistency(matrices, method=settings.correlation)
    reference = categories.long_table(all_pairs).assign(field="all", category="all models")
    summary = (
        table.groupby(["field", "category"], sort=True)
        .agg(
            n_models=("n_models", "first"),
            n_dataset_pairs=("consistency", "size"),
            mean=("consistency", "mean"),
            median=("consistency", "median"),
            min=("consistency", "min"),
            max=("consistency", "max"),
        )
        .reset_index()
    )
    _write_csv(item.folder / "category_consistency.csv", table)
    _write_csv(item.folder / "category_summary.csv", summary)
    _write_csv(item.folder / "all_pairs_consistency.csv", reference)
    anchors = categories.anchor_consistency(matrices, settings.anchors, settings.correlation)
    _write_csv(item.folder / "anchor_consistency.csv", anchors)
    written = {"category_fields_found": sorted(table["field"].unique().tolist()), "notes": notes}
    if settings.dataset_category_map:
        by_dataset = categories.dataset_category_consistency(
            all_pairs, settings.dataset_category_map
        )
        _write_csv(item.folder / "dataset_category_consistency.csv", by_dataset)
    save_figure(
        categories.boxplot_figure(
            table, reference["consistency"], f"consistency by model category, {item.slug}"
        ),
        item.folder / "category_consistency",
    )
    save_figure(
        categories.anchor_figure(anchors, f"anchor-model consistency, {item.slug}"),
        item.folder / "anchor_consistency",
    )
    return written


def _run_clustering(settings: AnalysesSettings, item: WorkItem) -> dict[str, Any]:
    import pandas as pd

    from sim_consistency.analysis.clustering import cluster_similarity, dendrogram_figure
    from sim_consistency.figures import save_figure
    from sim_consistency.similarity import consistency

    matrices = _matrices(settings, item)
    frames = []
    for dataset, frame in matrices.items():
        k = min(settings.n_clusters, len(frame))
        result = cluster_similarity(frame, k, settings.linkage, where=f"{dataset} ({item.slug})")
        frames.append(result.labels_frame().rename(columns={"id": "model_id"}).assign(
            dataset=dataset
        ))  # fmt: skip
        save_figure(
            dendrogram_figure(result, f"{dataset}, {item.slug}"),
            item.folder / f"dendrogram_{dataset_slug(dataset)}",
        )
    labels = pd.concat(frames, ignore_index=True)[["dataset", "model_id", "cluster", "leaf_order"]]
    _write_csv(item.folder / "model_clusters.csv", labels)
    if len(matrices) >= 3:
        table = consistency(matrices, method=settings.correlation)
        k = min(settings.n_clusters, len(table))
        result = cluster_similarity(table, k, settings.linkage, where="consistency table")
        _write_csv(
            item.folder / "dataset_clusters.csv",
            result.labels_frame().rename(columns={"id": "dataset"}),
        )
        save_figure(
            dendrogram_figure(result, f"datasets by {settings.correlation} consistency"),
            item.folder / "dendrogram_datasets",
        )
    return {"n_clusters": settings.n_clusters, "linkage": settings.linkage}


def _run_combined_gap(settings: AnalysesSettings, item: WorkItem) -> dict[str, Any]:
    from sim_consistency.analysis import combined_gap
    from sim_consistency.figures import save_figure

    assert settings.combined_probes is not None
    table = combined_gap.read_combined_probes(settings.combined_probes)
    joined = combined_gap.gap_vs_similarity(table, _matrices(settings, item))
    _write_csv(item.folder / "gap_vs_similarity.csv", joined)
    _write_csv(item.folder / "gap_summary.csv", combined_gap.gap_summary(joined))
    save_figure(combined_gap.scatter_figure(joined, item.slug), item.folder / "gap_vs_similarity")
    return {
        "combined_probes": str(settings.combined_probes),
        "combined_probes_digest": file_digest(settings.combined_probes),
        "gap": "combined_top1 - max(top1_a, top1_b)",
    }


def _run_sample_size(settings: AnalysesSettings, item: WorkItem) -> dict[str, Any]:
    from sim_consistency.analysis import sample_size
    from sim_consistency.features import load_aligned_blocks
    from sim_consistency.figures import save_figure

    _, _, features = load_aligned_blocks(item.inputs, settings.block)
    n_rows = int(features[0].shape[0])
    counts = sample_size.sample_counts(n_rows, settings.sample_sizes)
    curves = sample_size.subsample_curves(
        features,
        list(settings.model_ids),
        item.spec,
        counts,
        settings.sample_seeds,
        normalize=settings.normalize,
    )
    _write_csv(item.folder / "curves.csv", curves)
    _write_csv(item.folder / "convergence.csv", sample_size.convergence_summary(curves))
    save_figure(
        sample_size.curve_figure(curves, f"{item.datasets[0]}, {item.slug}"),
        item.folder / "curves",
    )
    return {
        "n_rows": n_rows,
        "sample_counts": counts,
        "seeds": list(settings.sample_seeds),
        "blocks": dict(zip(settings.model_ids, item.blocks, strict=True)),
        "sampling": "rows drawn without replacement by numpy.random.default_rng(seed), the "
        "same rows for every model",
    }


def _run_random_sets(settings: AnalysesSettings, item: WorkItem) -> dict[str, Any]:
    from sim_consistency.analysis import random_sets
    from sim_consistency.figures import save_figure

    draws = random_sets.random_set_consistency(
        _matrices(settings, item),
        settings.set_sizes,
        settings.n_draws,
        settings.seed,
        settings.correlation,
    )
    _write_csv(item.folder / "draws.csv", draws)
    _write_csv(item.folder / "summary.csv", random_sets.draw_summary(draws))
    save_figure(
        random_sets.histogram_figure(draws, f"random model sets, {item.slug}"),
        item.folder / "histogram",
    )
    return {
        "set_sizes": list(settings.set_sizes),
        "n_draws": settings.n_draws,
        "seed": settings.seed,
    }


_RUNNERS = {
    "categories": _run_categories,
    "clustering": _run_clustering,
    "combined_gap": _run_combined_gap,
    "sample_size": _run_sample_size,
    "random_sets": _run_random_sets,
}


def run_item(settings: AnalysesSettings, item: WorkItem) -> Path:
    """Compute one analysis of one metric and write its folder; return it."""
    (item.folder / METADATA_FILE).unlink(missing_ok=True)
    item.folder.mkdir(parents=True, exist_ok=True)
    details = _RUNNERS[item.analysis](settings, item)
    write_json(
        item.folder / METADATA_FILE,
        {
            "content_key": item.content_key,
            "analysis": item.analysis,
            "metric_slug": item.slug,
            "metric": item.spec.to_json(),
            "datasets": list(item.datasets),
            "model_ids": list(settings.model_ids),
            "input_content_keys": [str(k) for k in item.input_keys],
            "correlation": settings.correlation,
            "code_version": ANALYSES_CODE_VERSION,
            **details,
        },
    )
    log.info("%s (%s)", item.folder, item.reason)
    return item.folder


STAGE = Stage(
    name="analyses",
    settings=AnalysesSettings,
    description="The Rep2Rep paper's analyses: consistency by category and anchor, clustering, "
    "combined-probe gap, CKA sample-size curves, random model sets.",
    details="Writes results/analyses/<analysis>/<metric_slug>/ (tidy CSVs, PNG/PDF figures, "
    "metadata.json); up-to-date folders are reused.",
    examples=(
        "python scripts/analyses.py --models_config configs/models/demo.json "
        "--datasets wds/digits wds/digits_noisy --similarity_config default",
        "python scripts/analyses.py --models_config M.json --datasets D.txt --similarity_config "
        "default --analyses categories clustering --dataset_categories dataset_info.json",
    ),
    plan=plan,
    run=run_item,
    outputs=lambda item: [item.folder],
    label=lambda item: (
        f"{item.analysis}/{item.slug}"
        + (f"/{item.datasets[0]}" if item.analysis == "sample_size" else "")
    ),
    output_root=lambda settings: settings.location.results / "analyses",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, plan, compute (locally or on SLURM); print a summary. Returns the exit code."""
    return run_stage(STAGE, argv)
