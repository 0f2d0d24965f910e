"""Block×block linear CKA grids of model pairs and their files (the ``layer_cka`` stage's work).

:func:`block_grids` computes every pair's full (La, Lb) grid from per-block statistics computed
once per model (:func:`~sim_consistency.similarity.block_stats`), with a delete-a-group
jackknife interval per cell when row groups are given; :func:`grid_table` and
:func:`diagonal_profiles` turn them into tidy rows; :func:`write_grids_h5` and
:func:`write_grid_figures` write ``cka_grids.h5`` (``/grids/<a>__vs__<b>``, and ``/se``,
``/ci_low``, ``/ci_high`` mirroring it), the heatmaps and the diagonal profile.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sim_consistency.figures import half_width, save_heatmap, save_profile_plot
from sim_consistency.io import atomic_output

if TYPE_CHECKING:
    from sim_consistency.uncertainty import Interval

__all__ = [
    "Blocks",
    "block_grids",
    "diagonal_profiles",
    "grid_estimator",
    "grid_table",
    "load_all_blocks",
    "pair_name",
    "write_grid_figures",
    "write_grids_h5",
]

log = logging.getLogger("sim_consistency.layer_cka")

#: ``{model_id: (block_names, arrays)}``: every block of every model, read once.
Blocks = dict[str, tuple[list[str], list[np.ndarray]]]
Pair = tuple[str, str]
HEATMAPS = "heatmaps"


def pair_name(a: str, b: str) -> str:
    """Return the file stem of a model pair: ``<a>__vs__<b>``."""
    return f"{a}__vs__{b}"


def load_all_blocks(model_ids: Sequence[str], cache_paths: Sequence[Path]) -> Blocks:
    """Read every block of every model once: ``{model_id: (block_names, arrays)}``.

    Raises:
        CacheError: two caches do not hold the same rows (keys differ).
    """
    from sim_consistency.features import check_same_keys, open_cache

    out: Blocks = {}
    ref_keys = ref_path = None
    for model_id, path in zip(model_ids, cache_paths, strict=True):
        with open_cache(path) as cache:
            if ref_keys is None or ref_path is None:
                ref_keys, ref_path = cache.keys, path
            else:
                check_same_keys(ref_path, ref_keys, path, cache.keys)
            names = list(cache.block_names)
            out[model_id] = (names, [cache.block(name) for name in names])
    return out


def block_grids(
    blocks: Blocks,
    pairs: Sequence[Pair],
    *,
    unbiased: bool,
    normalize: bool,
    groups: np.ndarray | None = None,
    level: float = 0.95,
    seed: int = 0,
    where: str = "",
) -> tuple[dict[Pair, np.ndarray], dict[Pair, Interval], str]:
    """Return every pair's linear CKA grid, its interval per cell (with ``groups``), the space.

    Args:
        blocks: every block of every model (:func:`load_all_blocks`).
        pairs: the (a, b) model pairs; grid (i, j) is CKA(block i of a, block j of b).
        unbiased: unbiased HSIC (Song et al. 2012) instead of the biased one.
        normalize: L2-normalise each sample's features first.
        groups: jackknife row-group labels, (n,) (``None``: no intervals).
        level, seed: the intervals' coverage and the seed the groups were drawn with.
        where: progress-bar label.

    Returns:
        ``(grids, intervals, space)``; ``space`` is where the statistics were computed
        (:func:`~sim_consistency.similarity.choose_space`).
    """
    from sim_consistency.progress import progress_bar
    from sim_consistency.similarity import choose_space, l2_normalize
    from sim_consistency.uncertainty import grid_blocks, grid_with_leave_out, jackknife_interval

    n = next(iter(blocks.values()))[1][0].shape[0]
    involved = list(dict.fromkeys(m for pair in pairs for m in pair))
    widths = [X.shape[1] for m in involved for X in blocks[m][1]]
    space = choose_space(n, widths)
    stats = {}
    for model_id in progress_bar(involved, desc=f"layer_cka {where}: block statistics"):
        arrays = blocks[model_id][1]
        if normalize:
            arrays = [l2_normalize(X) for X in arrays]
        stats[model_id] = grid_blocks(arrays, space=space, groups=groups)
    grids: dict[Pair, np.ndarray] = {}
    intervals: dict[Pair, Interval] = {}
    for a, b in progress_bar(pairs, desc=f"layer_cka {where}: grids"):
        grids[(a, b)], theta = grid_with_leave_out(stats[a], stats[b], unbiased=unbiased)
        if theta is not None:
            intervals[(a, b)] = jackknife_interval(
                grids[(a, b)], theta, level=level, seed=seed, groups=groups
            )
    return grids, intervals, space


def grid_estimator(unbiased: bool, space: str) -> str:
    """Return the estimator's description recorded in the outputs."""
    return (
        "linear CKA, "
        + ("unbiased HSIC (Song et al. 2012)" if unbiased else "biased HSIC (Kornblith 2019)")
        + f", float64 accumulation, {space} space"
    )


def _ci_cells(interval: Interval | None, i: int, j: int) -> dict[str, float]:
    """Return the tidy row's ``se``, ``ci_low``, ``ci_high`` of cell (i, j) ({} without)."""
    if interval is None:
        return {}
    return {
        "se": float(interval.se[i, j]),
        "ci_low": float(interval.ci_low[i, j]),
        "ci_high": float(interval.ci_high[i, j]),
    }


def grid_table(
    grids: Mapping[Pair, np.ndarray],
    intervals: Mapping[Pair, Interval],
    blocks: Blocks,
    common: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Return the tidy rows: one per (pair, block_a, block_b), with ``common`` columns first."""
    return [
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


def diagonal_profiles(
    grids: Mapping[Pair, np.ndarray],
    intervals: Mapping[Pair, Interval],
    blocks: Blocks,
    reference: str,
    model_ids: Sequence[str],
    common: Mapping[str, Any],
) -> tuple[
    list[dict[str, Any]], dict[str, list[float]], dict[str, tuple[list[float], list[float]]]
]:
    """Return the "same block vs reference" profile of every other model.

    CKA between block ``name`` of the reference and block ``name`` of the model, over the block
    names they share (a model sharing none is left out, with a warning).

    Returns:
        ``(rows, profiles, bands)``: tidy rows (``common`` columns, reference, model_id, block,
        block_index, cka[, ci_low, ci_high]), ``{model_id: values}`` and, with intervals,
        ``{model_id: (low, high)}``.
    """
    rows: list[dict[str, Any]] = []
    profiles: dict[str, list[float]] = {}
    bands: dict[str, tuple[list[float], list[float]]] = {}
    ref_names = blocks[reference][0]
    for model_id in model_ids:
        if model_id == reference:
            continue
        if (reference, model_id) in grids:
            grid = grids[(reference, model_id)]
            interval = intervals.get((reference, model_id))
            low, high = (None, None) if interval is None else (interval.ci_low, interval.ci_high)
        else:  # --pairs all lists (other, reference) when the other comes first
            grid = grids[(model_id, reference)].T
            interval = intervals.get((model_id, reference))
            low, high = (
                (None, None) if interval is None else (interval.ci_low.T, interval.ci_high.T)
            )
        diagonal = _diagonal(ref_names, blocks[model_id][0], grid)
        if not diagonal:
            log.warning(
                "%s: %s shares no block name with the reference %s; no diagonal profile",
                common.get("dataset"),
                model_id,
                reference,
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
        rows += [
            {
                **common,
                "reference": reference,
                "model_id": model_id,
                "block": name,
                "block_index": i,
                "cka": value,
                **extra,
            }
            for (name, i, value), extra in zip(diagonal, ci_rows, strict=True)
        ]
    return rows, profiles, bands


def write_grids_h5(
    path: Path,
    grids: Mapping[Pair, np.ndarray],
    intervals: Mapping[Pair, Interval],
    blocks: Blocks,
    *,
    groups: np.ndarray | None,
    level: float,
    attrs: Mapping[str, Any],
) -> None:
    """Write ``/grids/<a>__vs__<b>`` (block names in its attributes) and, with ``groups``,
    ``/se``, ``/ci_low``, ``/ci_high`` mirroring ``/grids`` and ``/ci_groups``; file ``attrs``."""
    import h5py

    size = sum(grid.nbytes for grid in grids.values())  # refused up front if it cannot fit
    with (
        atomic_output(path, needed=size, what="the CKA grids") as tmp,
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
            f.attrs["ci_level"] = level
        for key, value in attrs.items():
            f.attrs[key] = value


def write_grid_figures(
    folder: Path,
    grids: Mapping[Pair, np.ndarray],
    intervals: Mapping[Pair, Interval],
    blocks: Blocks,
    profiles: Mapping[str, Sequence[float]],
    bands: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    profile_stem: str,
    dataset: str,
    split: str,
    reference: str,
) -> None:
    """Save one heatmap per pair under ``heatmaps/`` (earlier runs' removed) and the profile."""
    # The folder belongs to this item: figures of pairs from an earlier run must not linger
    # next to the new ones (a reader globbing heatmaps/ would mix runs).
    for stale in (folder / HEATMAPS).glob("*"):
        if stale.is_file() and stale.suffix in (".png", ".pdf"):
            stale.unlink()
    for (a, b), grid in grids.items():
        save_heatmap(
            grid,
            folder / HEATMAPS / pair_name(a, b),
            row_labels=blocks[a][0],
            col_labels=blocks[b][0],
            title=f"linear CKA, {dataset}: {a} vs {b}",
            xlabel=f"{b} block",
            ylabel=f"{a} block",
            half_widths=half_width(intervals[(a, b)]) if (a, b) in intervals else None,
        )
    save_profile_plot(
        profiles,
        folder / profile_stem,
        title=f"Linear CKA between each block of {reference} and the same block of "
        f"each model — {dataset} ({split})",
        xlabel="block",
        ylabel="linear CKA",
        xticklabels=blocks[reference][0],
        bands=bands or None,
    )
