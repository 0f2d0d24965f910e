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
up-to-date folders are reused. The files are written by :mod:`sim_consistency.analysis.drivers`.
"""

from __future__ import annotations

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
from sim_consistency.stages._similarity_flags import DEFAULT_SPLIT, CachedBlock, SimilarityMetrics
from sim_consistency.stages._similarity_io import (
    SIMILARITY_CODE_VERSION,
    cache_attrs,
    resolve_block,
    write_json,
)

if TYPE_CHECKING:
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
class AnalysesSettings(
    Models, Datasets, Threads, Force, Launcher, Wandb, SimilarityMetrics, CachedBlock
):
    """Everything a run depends on; :meth:`validated` loads the metrics and the metadata.

    ``--split``, ``--block`` and ``--normalize`` apply to ``sample_size`` (as the matrices).
    """

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
    model_metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    dataset_category_map: Mapping[str, str] = field(default_factory=dict)

    def validated(self) -> AnalysesSettings:
        from sim_consistency.analysis.categories import read_dataset_categories

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
            split=s.split or DEFAULT_SPLIT,
            model_metadata=metadata,
            dataset_category_map=read_dataset_categories(s.dataset_categories),
            combined_probes=Path(combined).resolve(),
            set_sizes=s.set_sizes or (max(3, len(s.model_ids) // 2),),
        )


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
    """The settings that change one analysis's numbers, with the code versions."""
    from sim_consistency.analysis.drivers import settings_key

    return {
        **settings_key(settings, analysis),
        "code_version": [SIMILARITY_CODE_VERSION, ANALYSES_CODE_VERSION],
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
                items.append(WorkItem(
                    analysis, slug, spec, settings.datasets, folders, tuple(keys), folder, key,
                    reason,
                ))  # fmt: skip
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
            items.append(WorkItem(
                "sample_size", slug, spec, (dataset,), paths, keys, folder, key, reason, blocks
            ))  # fmt: skip
    return items


def run_item(settings: AnalysesSettings, item: WorkItem) -> Path:
    """Compute one analysis of one metric and write its folder; return it."""
    (item.folder / METADATA_FILE).unlink(missing_ok=True)
    item.folder.mkdir(parents=True, exist_ok=True)
    from sim_consistency.analysis.drivers import DRIVERS

    details = DRIVERS[item.analysis](settings, item)
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
    "metadata.json); up-to-date folders are reused. --split, --block and --normalize choose the "
    "cached features sample_size recomputes CKA from (as the matrices were computed).",
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
