r"""Each analysis's folder, written from its inputs: tidy CSVs, figures, metadata details.

The ``analyses`` stage (:mod:`sim_consistency.stages.analyses`) plans one item per analysis and
metric (and dataset, for ``sample_size``) and calls :data:`DRIVERS`\ ``[analysis](settings,
item)``: the driver reads the item's inputs (similarity matrices, or feature caches), calls the
analysis module's functions, writes the folder's files and returns the details that go into its
``metadata.json`` (which the stage writes last). The drivers read only the attributes named by
:class:`AnalysisSettings` and :class:`AnalysisItem`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sim_consistency.outputs import file_digest
from sim_consistency.project import dataset_slug

if TYPE_CHECKING:
    import pandas as pd

    from sim_consistency.config.similarity import MetricSpec

__all__ = [
    "DRIVERS",
    "AnalysisItem",
    "AnalysisSettings",
    "run_categories",
    "run_clustering",
    "run_combined_gap",
    "run_random_sets",
    "run_sample_size",
    "settings_key",
]

log = logging.getLogger("sim_consistency.analyses")


class AnalysisSettings(Protocol):
    """The settings the drivers read (the ``analyses`` stage's settings)."""

    @property
    def model_ids(self) -> tuple[str, ...]: ...
    @property
    def correlation(self) -> Literal["pearson", "spearman"]: ...
    @property
    def model_metadata(self) -> Mapping[str, Mapping[str, Any]]: ...
    @property
    def category_fields(self) -> tuple[str, ...]: ...
    @property
    def anchors(self) -> tuple[str, ...]: ...
    @property
    def dataset_category_map(self) -> Mapping[str, str]: ...
    @property
    def n_clusters(self) -> int: ...
    @property
    def linkage(self) -> str: ...
    @property
    def combined_probes(self) -> Path | None: ...
    @property
    def block(self) -> str | None: ...
    @property
    def normalize(self) -> bool: ...
    @property
    def sample_sizes(self) -> tuple[int, ...]: ...
    @property
    def sample_seeds(self) -> tuple[int, ...]: ...
    @property
    def set_sizes(self) -> tuple[int, ...]: ...
    @property
    def n_draws(self) -> int: ...
    @property
    def seed(self) -> int: ...


class AnalysisItem(Protocol):
    """One analysis of one metric: its inputs and folder (the stage's work item)."""

    @property
    def slug(self) -> str: ...
    @property
    def spec(self) -> MetricSpec: ...
    @property
    def datasets(self) -> tuple[str, ...]: ...
    @property
    def inputs(self) -> tuple[Path, ...]: ...  # matrix folders (per dataset) or cache files
    @property
    def folder(self) -> Path: ...
    @property
    def blocks(self) -> tuple[str, ...]: ...


def settings_key(settings: AnalysisSettings, analysis: str) -> dict[str, Any]:
    """Return the settings that change one analysis's numbers (part of its content key)."""
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
        **per[analysis],
    }


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` as CSV without its index, atomically."""
    from sim_consistency.io import atomic_write_text

    atomic_write_text(path, frame.to_csv(index=False))


def _matrices(settings: AnalysisSettings, item: AnalysisItem) -> dict[str, pd.DataFrame]:
    """Return ``{dataset: matrix}`` restricted to the run's models."""
    from sim_consistency.similarity.matrix_files import read_similarity_matrix

    wanted = set(settings.model_ids)
    out = {}
    for dataset, folder in zip(item.datasets, item.inputs, strict=True):
        frame = read_similarity_matrix(folder)
        keep = [m for m in frame.index if m in wanted]
        out[dataset] = frame.loc[keep, keep]
    return out


def run_categories(settings: AnalysisSettings, item: AnalysisItem) -> dict[str, Any]:
    """Write the consistency by model category, per anchor and by dataset category."""
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


def run_clustering(settings: AnalysisSettings, item: AnalysisItem) -> dict[str, Any]:
    """Write every dataset's model clusters and dendrogram (and the datasets', with ≥ 3)."""
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


def run_combined_gap(settings: AnalysisSettings, item: AnalysisItem) -> dict[str, Any]:
    """Write the combined-probe gap against the pair's similarity, per dataset."""
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


def run_sample_size(settings: AnalysisSettings, item: AnalysisItem) -> dict[str, Any]:
    """Write CKA on sub-sampled rows per sample count, seed and model pair."""
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


def run_random_sets(settings: AnalysisSettings, item: AnalysisItem) -> dict[str, Any]:
    """Write the consistency of random model sets per set size."""
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


#: ``{analysis: driver}``; a driver writes the folder's files and returns metadata details.
DRIVERS: dict[str, Callable[[AnalysisSettings, AnalysisItem], dict[str, Any]]] = {
    "categories": run_categories,
    "clustering": run_clustering,
    "combined_gap": run_combined_gap,
    "sample_size": run_sample_size,
    "random_sets": run_random_sets,
}
