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
(:mod:`sim_consistency.stages._similarity_ci`): ``/se``, ``/ci_low``, ``/ci_high`` next to
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
from typing import TYPE_CHECKING, Literal

import numpy as np

from sim_consistency.errors import ConfigError
from sim_consistency.io import atomic_output, atomic_write_text
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
    half_width,
)
from sim_consistency.stages._similarity_io import (
    SIMILARITY_CODE_VERSION,
    cache_attrs,
    save_heatmap,
    save_profile_plot,
    write_json,
)

if TYPE_CHECKING:
    from sim_consistency.uncertainty import Interval

__all__ = [
    "STAGE",
    "LayerCkaSettings",
    "WorkItem",
    "main",
    "model_pairs",
    "pair_name",
    "plan",
    "run_item",
]

log = logging.getLogger("sim_consistency.layer_cka")

GRIDS_H5 = "cka_grids.h5"
TIDY_CSV = "layer_cka.csv"
PROFILE_CSV = "diagonal_profile.csv"
PROFILE_STEM = "diagonal_profile"
HEATMAPS = "heatmaps"
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


def pair_name(a: str, b: str) -> str:
    """Return the file stem of a model pair: ``<a>__vs__<b>``."""
    return f"{a}__vs__{b}"


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


def _load_all_blocks(item: WorkItem) -> dict[str, tuple[list[str], list[np.ndarray]]]:
    """Read every block of every model once: ``{model_id: (block_names, arrays)}``."""
    from sim_consistency.features import check_same_keys, open_cache

    out: dict[str, tuple[list[str], list[np.ndarray]]] = {}
    ref_keys = ref_path = None
    for model_id, path in zip(item.model_ids, item.cache_paths, strict=True):
        with open_cache(path) as cache:
            if ref_keys is None or ref_path is None:
                ref_keys, ref_path = cache.keys, path
            else:
                check_same_keys(ref_path, ref_keys, path, cache.keys)
            names = list(cache.block_names)
            out[model_id] = (names, [cache.block(name) for name in names])
    return out


def _diagonal(
    names_ref: list[str], names_other: list[str], grid: np.ndarray
) -> list[tuple[str, int, float]]:
    """Return ``(block, index in reference, CKA)`` for the block names both models share."""
    index_other = {name: j for j, name in enumerate(names_other)}
    return [
        (name, i, float(grid[i, index_other[name]]))
        for i, name in enumerate(names_ref)
        if name in index_other
    ]


def _ci_cells(interval: Interval | None, i: int, j: int) -> dict[str, float]:
    """Return the tidy row's ``se``, ``ci_low``, ``ci_high`` of cell (i, j) ({} without)."""
    if interval is None:
        return {}
    return {
        "se": float(interval.se[i, j]),
        "ci_low": float(interval.ci_low[i, j]),
        "ci_high": float(interval.ci_high[i, j]),
    }


def run_item(settings: LayerCkaSettings, item: WorkItem) -> Path:
    """Compute every grid of one dataset and write the outputs; return the folder."""
    import h5py
    import pandas as pd

    from sim_consistency.progress import progress_bar
    from sim_consistency.similarity import choose_space, l2_normalize
    from sim_consistency.threads import threads_metadata
    from sim_consistency.uncertainty import (
        grid_blocks,
        grid_with_leave_out,
        jackknife_interval,
        row_groups,
    )

    start = time.perf_counter()
    (item.folder / METADATA_FILE).unlink(missing_ok=True)
    blocks = _load_all_blocks(item)
    n = next(iter(blocks.values()))[1][0].shape[0]
    involved = list(dict.fromkeys(m for pair in item.pairs for m in pair))
    widths = [X.shape[1] for m in involved for X in blocks[m][1]]
    space = choose_space(n, widths)
    groups = row_groups(n, item.ci_groups, seed=item.ci_seed) if item.ci else None
    stats = {}
    for model_id in progress_bar(involved, desc=f"layer_cka {item.dataset}: block statistics"):
        arrays = blocks[model_id][1]
        if item.normalize:
            arrays = [l2_normalize(X) for X in arrays]
        stats[model_id] = grid_blocks(arrays, space=space, groups=groups)
    grids: dict[tuple[str, str], np.ndarray] = {}
    intervals: dict[tuple[str, str], Interval] = {}
    for a, b in progress_bar(item.pairs, desc=f"layer_cka {item.dataset}: grids"):
        grids[(a, b)], theta = grid_with_leave_out(stats[a], stats[b], unbiased=item.unbiased)
        if theta is not None:
            intervals[(a, b)] = jackknife_interval(
                grids[(a, b)], theta, level=CI_LEVEL, seed=item.ci_seed, groups=groups
            )
    common = {"dataset": item.dataset, "split": item.split}
    tidy = [
        {
            **common,
            "model_a": a,
            "model_b": b,
            "block_index_a": i,
            "block_a": blocks[a][0][i],
            "block_index_b": j,
            "block_b": blocks[b][0][j],
            "cka": float(grid[i, j]),
            **_ci_cells(intervals.get((a, b)), i, j),
        }
        for (a, b), grid in grids.items()
        for i in range(grid.shape[0])
        for j in range(grid.shape[1])
    ]
    profile_rows = []
    profiles: dict[str, list[float]] = {}
    bands: dict[str, tuple[list[float], list[float]]] = {}
    ref_names = blocks[item.reference][0]
    for model_id in item.model_ids:
        if model_id == item.reference:
            continue
        if (item.reference, model_id) in grids:
            grid = grids[(item.reference, model_id)]
            interval = intervals.get((item.reference, model_id))
            low, high = (None, None) if interval is None else (interval.ci_low, interval.ci_high)
        else:  # --pairs all lists (other, reference) when the other comes first
            grid = grids[(model_id, item.reference)].T
            interval = intervals.get((model_id, item.reference))
            low, high = (
                (None, None) if interval is None else (interval.ci_low.T, interval.ci_high.T)
            )
        diagonal = _diagonal(ref_names, blocks[model_id][0], grid)
        if not diagonal:
            log.warning(
                "%s: %s shares no block name with the reference %s; no diagonal profile",
                item.dataset,
                model_id,
                item.reference,
            )
            continue
        profiles[model_id] = [value for _, _, value in diagonal]
        ci_rows: list[dict[str, float]] = [{} for _ in diagonal]
        if low is not None and high is not None:
            ci_low = _diagonal(ref_names, blocks[model_id][0], low)
            ci_high = _diagonal(ref_names, blocks[model_id][0], high)
            bands[model_id] = ([v for _, _, v in ci_low], [v for _, _, v in ci_high])
            ci_rows = [
                {"ci_low": lo, "ci_high": hi}
                for (_, _, lo), (_, _, hi) in zip(ci_low, ci_high, strict=True)
            ]
        profile_rows += [
            {
                **common,
                "reference": item.reference,
                "model_id": model_id,
                "block": name,
                "block_index": i,
                "cka": value,
                **extra,
            }
            for (name, i, value), extra in zip(diagonal, ci_rows, strict=True)
        ]
    estimator = (
        "linear CKA, "
        + ("unbiased HSIC (Song et al. 2012)" if item.unbiased else "biased HSIC (Kornblith 2019)")
        + f", float64 accumulation, {space} space"
    )
    size = sum(grid.nbytes for grid in grids.values())  # refused up front if it cannot fit
    with (
        atomic_output(item.folder / GRIDS_H5, needed=size, what="the CKA grids") as tmp,
        h5py.File(tmp, "w", locking=False) as f,
    ):
        group = f.create_group("grids")
        for (a, b), grid in grids.items():
            ds = group.create_dataset(pair_name(a, b), data=grid)
            ds.attrs["model_a"], ds.attrs["model_b"] = a, b
            ds.attrs["block_names_a"] = blocks[a][0]
            ds.attrs["block_names_b"] = blocks[b][0]
        if groups is not None:  # /se, /ci_low, /ci_high mirror /grids
            for name in ("se", "ci_low", "ci_high"):
                ci_group = f.create_group(name)
                for (a, b), interval in intervals.items():
                    ci_group.create_dataset(pair_name(a, b), data=getattr(interval, name))
            f.create_dataset("ci_groups", data=groups)
            f.attrs["ci_level"] = CI_LEVEL
        f.attrs["content_key"] = item.content_key
        f.attrs["estimator"] = estimator
    atomic_write_text(item.folder / TIDY_CSV, pd.DataFrame(tidy).to_csv(index=False))
    profile_frame = pd.DataFrame(
        profile_rows,
        columns=["dataset", "split", "reference", "model_id", "block", "block_index", "cka"]
        + (["ci_low", "ci_high"] if groups is not None else []),
    )
    atomic_write_text(item.folder / PROFILE_CSV, profile_frame.to_csv(index=False))
    # The folder belongs to this item: figures of pairs from an earlier run must not linger
    # next to the new ones (a reader globbing heatmaps/ would mix runs).
    for stale in (item.folder / HEATMAPS).glob("*"):
        if stale.is_file() and stale.suffix in (".png", ".pdf"):
            stale.unlink()
    for (a, b), grid in grids.items():
        save_heatmap(
            grid,
            item.folder / HEATMAPS / pair_name(a, b),
            row_labels=blocks[a][0],
            col_labels=blocks[b][0],
            title=f"linear CKA, {item.dataset}: {a} vs {b}",
            xlabel=f"{b} block",
            ylabel=f"{a} block",
            half_widths=half_width(intervals[(a, b)]) if (a, b) in intervals else None,
        )
    save_profile_plot(
        profiles,
        item.folder / PROFILE_STEM,
        title=f"Linear CKA between each block of {item.reference} and the same block of "
        f"each model — {item.dataset} ({item.split})",
        xlabel="block",
        ylabel="linear CKA",
        xticklabels=ref_names,
        bands=bands or None,
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
