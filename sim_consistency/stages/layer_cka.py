"""Stage: block×block linear CKA grids between a reference model and the others, from the cache.

``python scripts/layer_cka.py --models_config … --datasets … --reference <model_id>
[--pairs reference|all] [--split test] [--unbiased] [--normalize/--no-normalize]`` writes, for
every dataset, ``results/layer_cka/<dataset_slug>/`` with

* ``cka_grids.h5`` — one full (La, Lb) grid per model pair (``/grids/<a>__vs__<b>``, block names
  in its attributes), not only the diagonal;
* ``layer_cka.csv`` — the same numbers, tidy: one row per (pair, block_a, block_b);
* ``heatmaps/<a>__vs__<b>.png|.pdf`` — annotated viridis heatmaps on a fixed 0–1 scale;
* ``diagonal_profile.csv`` + ``diagonal_profile.png|.pdf`` — CKA between the same block of the
  reference and of each other model (the "same block vs reference" profile of the MonoSoup
  paper: pretrained, finetuned, monosoup, highonly, lowonly), over the block names they share;
* ``metadata.json`` — estimator, normalisation, input content keys and the content key the
  planner compares to skip finished outputs (written last; removed first when rebuilding).

``--ci [--ci_groups K] [--ci_seed S]`` adds a 95 % delete-a-group jackknife interval per cell
(:mod:`sim_consistency.stages._similarity_ci`; written by
:mod:`sim_consistency.similarity.grid_outputs`): ``/se``, ``/ci_low``, ``/ci_high`` next to
``/grids`` in ``cka_grids.h5``, the same columns in ``layer_cka.csv``, ``ci_low``/``ci_high`` in
the profile, ``0.83±0.02`` annotations, hatched wide cells and profile bands in the figures; the
grids themselves are bitwise those without ``--ci``.

One work item is one dataset: each model's cache is read once, each block's CKA statistics
(:func:`~sim_consistency.similarity.block_stats`) are computed once and reused for every pair.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from sim_consistency.errors import ConfigError
from sim_consistency.io import atomic_write_text
from sim_consistency.outputs import METADATA_FILE, json_digest
from sim_consistency.project import dataset_slug
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
from sim_consistency.stages._similarity_ci import (
    CI_LEVEL,
    POINT_KEY,
    CiSettings,
    ci_key_fields,
    ci_metadata,
    ci_plan_reason,
)
from sim_consistency.stages._similarity_io import SIMILARITY_CODE_VERSION, cache_attrs, write_json

__all__ = [
    "STAGE",
    "LayerCkaSettings",
    "WorkItem",
    "main",
    "model_pairs",
    "plan",
    "run_item",
]

log = logging.getLogger("sim_consistency.layer_cka")

GRIDS_H5 = "cka_grids.h5"
TIDY_CSV = "layer_cka.csv"
PROFILE_CSV = "diagonal_profile.csv"
PROFILE_STEM = "diagonal_profile"
OUTPUT_FILES = (GRIDS_H5, TIDY_CSV, PROFILE_CSV, PROFILE_STEM + ".png", PROFILE_STEM + ".pdf")


@dataclass(frozen=True, kw_only=True)
class LayerCkaSettings(Models, Datasets, Threads, Force, Launcher, Wandb, CiSettings):
    """Everything a run depends on; :meth:`validated` puts the reference among the models."""

    reference: str = option("model id every grid is taken against", default=None, required=True)
    pairs: Literal["reference", "all"] = option(
        "reference: reference vs every other model; all: every model pair",
        default="reference",
        choices=("reference", "all"),
    )
    split: str = option("dataset split of the caches", default="test")
    unbiased: bool = option(
        "unbiased HSIC estimator (Song et al. 2012) instead of the biased one",
        default=False,
        negatable=True,
    )
    normalize: bool = option(
        "L2-normalise each sample's features first (as Rep2Rep)", default=True, negatable=True
    )

    def validated(self) -> LayerCkaSettings:
        s = super().validated()
        specs = s.load_specs()
        if s.reference not in specs:
            raise ConfigError(
                f"--reference: unknown model id {s.reference!r}. Known: {', '.join(specs)}."
            )
        model_ids = s.model_ids if s.reference in s.model_ids else (s.reference, *s.model_ids)
        if len(model_ids) < 2:
            raise ConfigError(
                f"--model_key: layer_cka needs the reference and at least one other model "
                f"(got {list(model_ids)})."
            )
        return replace(s, model_ids=tuple(model_ids))


@dataclass(frozen=True)
class WorkItem:
    """One dataset: the caches to read once and the grids to write from them."""

    dataset: str
    split: str
    reference: str
    model_ids: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    cache_paths: tuple[Path, ...]
    input_keys: tuple[str, ...]
    unbiased: bool
    normalize: bool
    folder: Path
    content_key: str
    reason: str  # "missing" | "stale" | "forced"
    point_key: str = ""  # the content key of the same grids without intervals
    ci: bool = False
    ci_groups: int = 20
    ci_seed: int = 0


#: Bump when the figures change (names, axes): the folder's outputs are rebuilt, not reused.
FIGURES_VERSION = "2"  # 2: file names keep every character of the ids; profile axis scaled


def model_pairs(
    model_ids: Sequence[str], reference: str, mode: Literal["reference", "all"]
) -> list[tuple[str, str]]:
    """Return the (a, b) pairs to compare: reference vs each other model, or every pair."""
    if mode == "reference":
        return [(reference, m) for m in model_ids if m != reference]
    return [(a, b) for i, a in enumerate(model_ids) for b in model_ids[i + 1 :]]


def plan(settings: LayerCkaSettings) -> list[WorkItem]:
    """Return one work item per dataset whose outputs are missing or stale (all with force)."""
    loc = settings.location
    pairs = tuple(model_pairs(settings.model_ids, settings.reference, settings.pairs))
    items: list[WorkItem] = []
    for dataset in settings.datasets:
        attrs = cache_attrs(loc, dataset, settings.split, settings.model_ids)
        keys = tuple(str(attrs[m].get("content_key", "")) for m in settings.model_ids)
        folder = loc.layer_cka / dataset_slug(dataset)
        fields = {
            "inputs": [list(p) for p in zip(settings.model_ids, keys, strict=True)],
            "reference": settings.reference,
            "pairs": [list(p) for p in pairs],
            "unbiased": settings.unbiased,
            "normalize": settings.normalize,
            "split": settings.split,
            "code_version": SIMILARITY_CODE_VERSION,
            "figures_version": FIGURES_VERSION,
        }
        point_key = json_digest(fields)
        key = json_digest({**fields, **ci_key_fields(settings)})
        reason = ci_plan_reason(
            folder, key, point_key, OUTPUT_FILES, force=settings.force, ci=settings.ci
        )
        if reason is None:
            continue
        items.append(
            WorkItem(
                dataset=dataset,
                split=settings.split,
                reference=settings.reference,
                model_ids=settings.model_ids,
                pairs=pairs,
                cache_paths=tuple(
                    loc.feature_file(dataset, settings.split, m) for m in settings.model_ids
                ),
                input_keys=keys,
                unbiased=settings.unbiased,
                normalize=settings.normalize,
                folder=folder,
                content_key=key,
                reason=reason,
                point_key=point_key,
                ci=settings.ci,
                ci_groups=settings.ci_groups,
                ci_seed=settings.ci_seed,
            )
        )
    return items


def run_item(settings: LayerCkaSettings, item: WorkItem) -> Path:
    """Compute every grid of one dataset and write the outputs; return the folder."""
    import pandas as pd

    from sim_consistency.similarity import grid_outputs as go
    from sim_consistency.threads import threads_metadata
    from sim_consistency.uncertainty import row_groups

    start = time.perf_counter()
    (item.folder / METADATA_FILE).unlink(missing_ok=True)
    blocks = go.load_all_blocks(item.model_ids, item.cache_paths)
    n = next(iter(blocks.values()))[1][0].shape[0]
    groups = row_groups(n, item.ci_groups, seed=item.ci_seed) if item.ci else None
    grids, intervals, space = go.block_grids(
        blocks,
        item.pairs,
        unbiased=item.unbiased,
        normalize=item.normalize,
        groups=groups,
        level=CI_LEVEL,
        seed=item.ci_seed,
        where=item.dataset,
    )
    common = {"dataset": item.dataset, "split": item.split}
    profile_rows, profiles, bands = go.diagonal_profiles(
        grids, intervals, blocks, item.reference, item.model_ids, common
    )
    estimator = go.grid_estimator(item.unbiased, space)
    go.write_grids_h5(
        item.folder / GRIDS_H5,
        grids,
        intervals,
        blocks,
        groups=groups,
        level=CI_LEVEL,
        attrs={"content_key": item.content_key, "estimator": estimator},
    )
    tidy = pd.DataFrame(go.grid_table(grids, intervals, blocks, common))
    atomic_write_text(item.folder / TIDY_CSV, tidy.to_csv(index=False))
    profile_frame = pd.DataFrame(
        profile_rows,
        columns=["dataset", "split", "reference", "model_id", "block", "block_index", "cka"]
        + (["ci_low", "ci_high"] if groups is not None else []),
    )
    atomic_write_text(item.folder / PROFILE_CSV, profile_frame.to_csv(index=False))
    go.write_grid_figures(
        item.folder,
        grids,
        intervals,
        blocks,
        profiles,
        bands,
        profile_stem=PROFILE_STEM,
        dataset=item.dataset,
        split=item.split,
        reference=item.reference,
    )
    seconds = time.perf_counter() - start
    write_json(
        item.folder / METADATA_FILE,
        {
            "content_key": item.content_key,
            "dataset": item.dataset,
            "split": item.split,
            "reference": item.reference,
            "pairs": [list(p) for p in item.pairs],
            "unbiased": item.unbiased,
            "normalize": item.normalize,
            "estimator": estimator,
            "model_ids": list(item.model_ids),
            "block_names": {m: blocks[m][0] for m in item.model_ids},
            "input_content_keys": dict(zip(item.model_ids, item.input_keys, strict=True)),
            "n_samples": n,
            "code_version": SIMILARITY_CODE_VERSION,
            "seconds": round(seconds, 3),
            POINT_KEY: item.point_key,
            "ci": item.ci,
            **(ci_metadata(next(iter(intervals.values())), n) if intervals else {}),
            **threads_metadata(),
        },
    )
    log.info("%s: %d grid(s), n=%d, %.2f s (%s)", item.folder, len(grids), n, seconds, item.reason)
    return item.folder


STAGE = Stage(
    name="layer_cka",
    settings=LayerCkaSettings,
    description="Block×block linear CKA grids between a reference model and the others.",
    details="Writes results/layer_cka/<dataset_slug>/: cka_grids.h5, layer_cka.csv, heatmaps, "
    "the diagonal profile and metadata.json; up-to-date folders are reused.",
    examples=(
        "python scripts/layer_cka.py --models_config configs/models/demo.json "
        "--datasets wds/digits --reference rn_w0",
        "python scripts/layer_cka.py --models_config M.json --datasets wds/digits "
        "--reference w0 --pairs all --unbiased",
    ),
    plan=plan,
    run=run_item,
    outputs=lambda item: [item.folder],
    label=lambda item: item.dataset,
    output_root=lambda settings: settings.location.layer_cka,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, plan, compute (locally or on SLURM); print a summary. Returns the exit code."""
    return run_stage(STAGE, argv)
