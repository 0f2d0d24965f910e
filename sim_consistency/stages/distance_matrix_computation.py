"""Stage: model×model similarity matrices per dataset and metric, from the feature cache.

``python scripts/distance_matrix_computation.py --models_config … --datasets …
--similarity_config configs/similarity/<name>.json [--block NAME] [--split test]
[--max_samples N] [--profile rep2rep] [--normalize/--no-normalize] [--device auto|cpu|cuda]
[--memory_budget 4G] [--launcher local|slurm]`` writes, for every dataset and metric,
``model_similarities/<dataset_slug>/<metric_slug>/`` with ``model_ids.txt`` (matrix order),
``similarity_matrix.h5`` and ``similarity_matrix.csv`` (the same matrix) and ``metadata.json``
(estimator, blocks, normalisation, input content keys, NaN entries). ``metadata.json`` is
written last (and removed first when a folder is rebuilt) and its
``content_key`` — a digest of the input caches' content keys, the metric, block, normalisation
and the code version — is what the planner compares to skip finished outputs.

One work item (one SLURM job) is one dataset: each model's feature file is read once, each
model's statistics (means, self-HSIC, row norms, Gram or RDM ranks, k-NN tables) are computed
once per metric and reused for every pair, and every metric's matrix is written from them.
Undefined similarities (a constant representation) are written as NaN and listed in the
metadata, never as a number.

``--ci [--ci_groups K] [--ci_seed S]`` adds a 95 % delete-a-group jackknife interval per entry
(:mod:`sim_consistency.stages._similarity_ci`): ``se``, ``ci_low``, ``ci_high`` and
``ci_groups`` in ``similarity_matrix.h5`` and the long ``similarity_ci.csv``; the matrix itself is
bitwise the one without ``--ci``. The stage draws no figure (with or without ``--ci``): the
aggregation's heatmaps hatch and annotate the intervals.
Mutual k-NN gets no interval (``ci_unavailable`` in its metadata says why).

Our defaults compare the ``test`` split, all rows. ``--profile rep2rep`` compares what Rep2Rep
does (for the flags left unset): the ``train`` split with its 10k subset rule
(``--max_samples 10000``: a split of more than 10 000 rows is cut to a seeded, class-stratified
subset of 10 000 rows, at most ``ceil(10000 / C)`` per class,
:func:`~sim_consistency.data.stratified_subset` with seed 0; smaller splits are used whole).
The subset's size and key fingerprint are in ``metadata.json``.

RBF CKA and RSA matrices take all their pairs' cross terms in one streamed Gram product
(:mod:`sim_consistency.similarity.streamed`): each model's kernel is formed once per slab, not
once per pair, and the working set stays under ``--memory_budget``. ``--device cuda`` (or
``auto`` when a GPU is present) runs that algebra in torch on the GPU in float64; the device and
precision are recorded in ``metadata.json``. Neither changes the numbers beyond rounding
(≤ 1e-9), so neither is part of the content key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sim_consistency.errors import ConfigError
from sim_consistency.outputs import json_digest
from sim_consistency.runtime import (
    Datasets,
    Device,
    Force,
    Launcher,
    Models,
    Profile,
    Stage,
    Threads,
    Wandb,
    option,
    run_stage,
)
from sim_consistency.stages._similarity_ci import (
    CI_LEVEL,
    POINT_KEY,
    CiSettings,
    ci_key_fields,
    ci_metadata,
    ci_plan_reason,
    no_interval_reason,
)
from sim_consistency.stages._similarity_flags import DEFAULT_SPLIT, CachedBlock, SimilarityMetrics
from sim_consistency.stages._similarity_io import (
    SIMILARITY_CODE_VERSION,
    cache_attrs,
    resolve_block,
    similarity_folder,
)

if TYPE_CHECKING:
    from sim_consistency.config.similarity import MetricSpec
    from sim_consistency.uncertainty import Interval

__all__ = [
    "STAGE",
    "MatrixSettings",
    "MetricOutput",
    "WorkItem",
    "main",
    "plan",
    "run_item",
    "write_matrices",
]

log = logging.getLogger("sim_consistency.distance_matrix_computation")


@dataclass(frozen=True, kw_only=True)
class MatrixSettings(
    Models,
    Datasets,
    Device,
    Threads,
    Force,
    Launcher,
    Wandb,
    CiSettings,
    Profile,
    SimilarityMetrics,
    CachedBlock,
):
    """Everything a run depends on; :meth:`validated` loads the metrics and checks the flags."""

    max_samples: int | None = option(
        "compare a seeded class-stratified subset of at most N rows of larger splits "
        "(Rep2Rep's 10k rule); 0: all rows",
        default=None,
        type=int,
        shown_default="all rows; 10000 with --profile rep2rep",
    )
    memory_budget: int | str = option(
        "working memory of the streamed RBF-CKA/RSA products (e.g. 512M, 4G); models are tiled "
        "when one slab of all of them does not fit",
        default="2G",
    )

    def validated(self) -> MatrixSettings:
        from sim_consistency.similarity.streamed import check_device, parse_memory_budget

        s = super().validated().with_defaults()
        if s.max_samples is not None and s.max_samples < 0:
            raise ConfigError(f"--max_samples must be >= 0 (got {s.max_samples}); 0: all rows.")
        s = replace(s, max_samples=s.max_samples or None)  # 0: all rows
        if len(s.model_ids) < 2:
            raise ConfigError(
                f"--model_key: a similarity matrix needs at least 2 models (got {list(s.model_ids)})."
            )
        return replace(
            s,
            device=check_device(s.device),
            memory_budget=parse_memory_budget(s.memory_budget),
        )

    def with_defaults(self) -> MatrixSettings:
        """Fill the flags left unset: from ``--profile``, else our defaults (idempotent)."""
        from sim_consistency.runtime.profiles import resolve_profile

        return resolve_profile(self, "distance_matrix_computation", {"split": DEFAULT_SPLIT})


@dataclass(frozen=True)
class MetricOutput:
    """One matrix to (re)build: a metric, its output folder and content key."""

    spec: MetricSpec
    slug: str
    folder: Path
    content_key: str
    reason: str  # "missing" | "stale" | "forced"
    point_key: str = ""  # the content key of the same matrix without intervals


@dataclass(frozen=True)
class WorkItem:
    """One dataset: the caches to read once and the matrices to write from them."""

    dataset: str
    split: str
    model_ids: tuple[str, ...]
    cache_paths: tuple[Path, ...]
    input_keys: tuple[str, ...]
    block: str | None
    blocks: tuple[str, ...]
    normalize: bool
    outputs: tuple[MetricOutput, ...]
    device: str = "auto"
    memory_budget: int = 2 << 30
    ci: bool = False
    ci_groups: int = 20
    ci_seed: int = 0
    max_samples: int | None = None


def plan(settings: MatrixSettings) -> list[WorkItem]:
    """Return one work item per dataset with the metrics whose output is missing or stale."""
    from sim_consistency.similarity import metric_slug
    from sim_consistency.similarity.matrix_files import (
        MATRIX_CI_CSV,
        MATRIX_CSV,
        MATRIX_H5,
        MODEL_IDS,
    )

    settings = settings.with_defaults()  # settings built in code may skip validated()
    items: list[WorkItem] = []
    loc = settings.location
    for dataset in settings.datasets:
        attrs = cache_attrs(loc, dataset, settings.split, settings.model_ids)
        keys = {m: str(a.get("content_key", "")) for m, a in attrs.items()}
        blocks = tuple(
            resolve_block(attrs[m], settings.block, loc.feature_file(dataset, settings.split, m))
            for m in settings.model_ids
        )
        outputs: list[MetricOutput] = []
        for spec in settings.metrics:
            slug = metric_slug(spec)
            folder = similarity_folder(loc, dataset, spec)
            fields = {
                "inputs": [[m, keys[m]] for m in settings.model_ids],
                "metric": spec.to_json(),
                "blocks": list(blocks),
                "normalize": settings.normalize,
                "split": settings.split,
                "code_version": SIMILARITY_CODE_VERSION,
                # only when set, so that the keys of full-split matrices stay as they were
                **({"max_samples": settings.max_samples} if settings.max_samples else {}),
            }
            point_key = json_digest(fields)
            key = json_digest({**fields, **ci_key_fields(settings)})
            files = [MATRIX_H5, MATRIX_CSV, MODEL_IDS]
            if settings.ci and no_interval_reason(spec) is None:
                files += [MATRIX_CI_CSV]
            reason = ci_plan_reason(
                folder, key, point_key, files, force=settings.force, ci=settings.ci
            )
            if reason is None:
                continue
            outputs.append(MetricOutput(spec, slug, folder, key, reason, point_key))
        if outputs:
            items.append(
                WorkItem(
                    dataset=dataset,
                    split=settings.split,
                    model_ids=settings.model_ids,
                    cache_paths=tuple(
                        loc.feature_file(dataset, settings.split, m) for m in settings.model_ids
                    ),
                    input_keys=tuple(keys[m] for m in settings.model_ids),
                    block=settings.block,
                    blocks=blocks,
                    normalize=settings.normalize,
                    outputs=tuple(outputs),
                    device=settings.device,
                    memory_budget=int(settings.memory_budget),
                    ci=settings.ci,
                    ci_groups=settings.ci_groups,
                    ci_seed=settings.ci_seed,
                    max_samples=settings.max_samples,
                )
            )
    return items


def _compute(
    item: WorkItem, out: MetricOutput, features: list
) -> tuple[np.ndarray, Interval | None]:
    """Return one metric's matrix, with its jackknife interval when ``--ci`` gives one."""
    from sim_consistency.similarity import similarity_matrix
    from sim_consistency.uncertainty import similarity_matrix_ci

    options: dict[str, Any] = {
        "normalize": item.normalize,
        "progress": True,
        "memory_budget": item.memory_budget,
        "device": item.device,
        "scratch_dir": out.folder,  # RSA ranks past the budget spill here (removed after)
    }
    if not item.ci or no_interval_reason(out.spec) is not None:
        return similarity_matrix(features, out.spec, **options), None
    interval = similarity_matrix_ci(
        features,
        out.spec,
        n_groups=item.ci_groups,
        seed=item.ci_seed,
        level=CI_LEVEL,
        **options,
    )
    return interval.point, interval


def run_item(settings: MatrixSettings, item: WorkItem) -> list[Path]:
    """Compute and write every matrix of one dataset; return the output folders."""
    from sim_consistency.data import stratified_subset
    from sim_consistency.features import load_aligned_blocks

    # One read per cache file; keys checked to be identical across caches (else CacheError).
    keys, labels, features = load_aligned_blocks(item.cache_paths, item.block)
    if item.max_samples is not None and labels.size > item.max_samples:  # Rep2Rep's subset rule
        subset = stratified_subset(np.asarray(labels), max_samples=item.max_samples, seed=0)
        features = [f[subset] for f in features]
        keys = keys[subset]
    return write_matrices(item, features, keys)


def write_matrices(
    item: WorkItem, features: list[np.ndarray], keys: np.ndarray | None = None
) -> list[Path]:
    """Compute and write every matrix of ``item`` from its features; return the folders."""
    from sim_consistency.data import keys_fingerprint
    from sim_consistency.similarity import describe_estimator
    from sim_consistency.similarity.matrix_files import write_similarity_matrix
    from sim_consistency.similarity.streamed import resolve_device
    from sim_consistency.threads import threads_metadata

    n = features[0].shape[0]
    written: list[Path] = []
    for out in item.outputs:
        start = time.perf_counter()
        matrix, interval = _compute(item, out, features)
        seconds = time.perf_counter() - start
        if np.isnan(matrix).any():
            log.warning(
                "%s: %d NaN entries (constant representations); they are written as NaN",
                out.folder,
                int(np.isnan(matrix).sum()),
            )
        metadata = {
            "content_key": out.content_key,
            POINT_KEY: out.point_key,
            "dataset": item.dataset,
            "split": item.split,
            "metric_slug": out.slug,
            "metric": out.spec.to_json(),
            "estimator": describe_estimator(out.spec),
            "normalize": item.normalize,
            "model_ids": list(item.model_ids),
            "blocks": dict(zip(item.model_ids, item.blocks, strict=True)),
            "input_content_keys": dict(zip(item.model_ids, item.input_keys, strict=True)),
            "n_samples": n,
            "max_samples": item.max_samples,
            "rows_fingerprint": None if keys is None else keys_fingerprint([str(k) for k in keys]),
            # NaN marks an undefined similarity (a constant representation), never a number.
            "nan_model_ids": [
                m for m, row in zip(item.model_ids, matrix, strict=True) if np.isnan(row).all()
            ],
            "n_nan_entries": int(np.isnan(matrix).sum()),
            "code_version": SIMILARITY_CODE_VERSION,
            "device": resolve_device(item.device),
            "precision": "float64 accumulation (numpy or torch float64)",
            "memory_budget_bytes": item.memory_budget,
            "seconds": round(seconds, 3),
            **threads_metadata(),
        }
        if item.ci:
            metadata["ci"] = item.ci
            if interval is not None:
                metadata.update(ci_metadata(interval, n))
            else:
                metadata["ci_unavailable"] = no_interval_reason(out.spec)
        write_similarity_matrix(out.folder, matrix, item.model_ids, metadata, interval)
        log.info(
            "%s: %d models, n=%d, %.2f s (%s%s)",
            out.folder,
            len(item.model_ids),
            n,
            seconds,
            out.reason,
            ", with intervals" if interval is not None else "",
        )
        written.append(out.folder)
    return written


STAGE = Stage(
    name="distance_matrix_computation",
    settings=MatrixSettings,
    description="Model×model similarity matrices per dataset and metric, from the feature cache.",
    details="Writes model_similarities/<dataset_slug>/<metric_slug>/ (HDF5 + CSV + metadata.json); "
    "up-to-date matrices are reused.",
    examples=(
        "python scripts/distance_matrix_computation.py --models_config configs/models/demo.json "
        "--datasets wds/digits --similarity_config default",
        "python scripts/distance_matrix_computation.py --models_config M.json --datasets D.txt "
        "--similarity_config default --block blocks.5 --launcher slurm --slurm_config debug",
        "python scripts/distance_matrix_computation.py --models_config M.json --datasets D.txt "
        "--similarity_config default --profile rep2rep",
    ),
    plan=plan,
    run=run_item,
    outputs=lambda item: [o.folder for o in item.outputs],
    label=lambda item: item.dataset,
    output_root=lambda settings: settings.location.model_similarities,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, plan, compute (locally or on SLURM); print a summary. Returns the exit code."""
    return run_stage(STAGE, argv)
