"""Helpers shared by the similarity stages: cache look-up, matrix reading, heatmaps (private).

Cheap to import (the stages' ``--help`` path): h5py, pandas and matplotlib load when used.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sim_consistency.errors import CacheIntegrityError, ConfigError, MissingInputError
from sim_consistency.figures import data_limits, save_figure, series_style, subplots
from sim_consistency.io import atomic_write_text
from sim_consistency.outputs import METADATA_FILE, stored_key
from sim_consistency.project import ProjectLocation

if TYPE_CHECKING:
    import pandas as pd

#: Bump when a change to the similarity code changes the numbers it writes.
# 2: sigma_median by slab selection; 3: U-statistics without the diagonal (exact RBF at small σ);
# 4: mutual k-NN of a constant representation is NaN; 5: linear CKA's feature-space cross
# products summed over 20 fixed random row groups (the jackknife's default groups: --ci reuses
# them), not contiguous chunks (last-bit changes).
SIMILARITY_CODE_VERSION = "5"
MATRIX_H5 = "similarity_matrix.h5"
MATRIX_CSV = "similarity_matrix.csv"
MODEL_IDS = "model_ids.txt"
#: Long table of a matrix with its intervals (written with ``--ci``).
MATRIX_CI_CSV = "similarity_ci.csv"
#: Heatmap of a matrix with its intervals (written with ``--ci``), ``.png`` and ``.pdf``.
MATRIX_CI_FIGURE = "similarity_ci"
#: Heatmap cells whose 95% interval is wider than ± this are hatched.
WIDE_INTERVAL = 0.05


def cache_attrs(
    location: ProjectLocation, dataset: str, split: str, model_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Return ``{model_id: attrs}`` of the models' complete feature caches (all must exist).

    Only attributes are read (content key, block names); the features are read later, once.

    Raises:
        MissingInputError: naming every missing cache file.
        CacheIntegrityError: naming every file that is incomplete or not a cache of ours (and
            why); extraction rebuilds those.
    """
    from sim_consistency.features import inspect_cache

    found: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    invalid: list[str] = []
    for model_id in model_ids:
        path = location.feature_file(dataset, split, model_id)
        status = inspect_cache(path)
        if status.problem == "no such file":
            missing.append(str(path))
        elif status.problem is not None or status.attrs is None:
            invalid.append(f"{path} ({status.problem})")
        else:
            found[model_id] = status.attrs
    hint = f"Run scripts/feature_extraction.py --datasets {dataset} --splits {split} first"
    if invalid:
        raise CacheIntegrityError(
            "feature cache(s) not usable: " + ", ".join(invalid) + f". {hint} (it rebuilds them)."
        )
    if missing:
        raise MissingInputError("feature cache(s) missing: " + ", ".join(missing) + f". {hint}.")
    return found


def resolve_block(attrs: Mapping[str, Any], block: str | None, path: Path) -> str:
    """Return ``block``, checked to exist in the cache.

    The default is Rep2Rep's representation (block ``rep2rep``) when the model's entry gives
    ``module_name``, else the cache's last block.
    """
    names = list(attrs["block_names"])
    default = "rep2rep" if "rep2rep" in names else names[-1]
    chosen = default if block is None else block
    if chosen not in names:
        raise ConfigError(
            f"--block {chosen!r}: {path} has no such block. Its blocks: {', '.join(names)}."
        )
    return chosen


def read_similarity_matrix(folder: Path) -> pd.DataFrame:
    """Return the (M, M) matrix stored in ``folder`` as a DataFrame indexed by model id.

    Raises:
        MissingInputError: the folder has no complete matrix (no ``metadata.json``, written
            last, or no HDF5 file).
    """
    import h5py
    import pandas as pd

    path = folder / MATRIX_H5
    if not path.is_file() or stored_key(folder) is None:
        raise MissingInputError(
            f"{folder}: no complete similarity matrix ({MATRIX_H5} + {METADATA_FILE}); run "
            "scripts/distance_matrix_computation.py for this dataset and metric first."
        )
    with h5py.File(path, "r") as f:
        matrix = f["similarity_matrix"][()]
        ids = list(f["model_ids"].asstr()[()])
    return pd.DataFrame(matrix, index=ids, columns=ids)


def write_json(path: Path, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    return atomic_write_text(
        path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    )


def _short(labels: Sequence[str], width: int = 32) -> list[str]:
    """Return tick labels cut to ``width`` characters from the left (paths keep their end)."""
    return [str(x) if len(str(x)) <= width else "…" + str(x)[-(width - 1) :] for x in labels]


def save_heatmap(
    values: np.ndarray,
    path_stem: Path,
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    xlabel: str = "",
    ylabel: str = "",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    half_widths: np.ndarray | None = None,
    wide: float = WIDE_INTERVAL,
    hatch: np.ndarray | None = None,
    hatch_label: str = "",
) -> list[Path]:
    """Save an annotated viridis heatmap as ``<stem>.png`` and ``<stem>.pdf``.

    The colour scale is fixed (``vmin``..``vmax``, default 0–1) so that heatmaps of different
    pairs can be compared by eye; cells are annotated with two decimals up to 20×20. With
    ``half_widths`` (confidence intervals' half-widths, same shape) the annotation reads
    ``0.83±0.02`` and cells whose half-width exceeds ``wide`` (or is NaN: no interval) are
    hatched at every size; the title says so. Cells where the boolean mask ``hatch`` is True
    are hatched (``///``), explained by ``hatch_label`` in a legend below the axes.
    """
    rows, cols = values.shape
    lo = float(np.nanmin(values)) if vmin is None else vmin
    hi = float(np.nanmax(values)) if vmax is None else vmax
    hi = hi if hi > lo else lo + 1.0
    size = (max(4.0, 0.45 * cols + 2.5), max(3.5, 0.4 * rows + 2.0))
    fig, ax = subplots(figsize=size)
    image = ax.imshow(values, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(cols), labels=_short(col_labels), rotation=90, fontsize=7)
    ax.set_yticks(range(rows), labels=_short(row_labels), fontsize=7)
    if rows * cols <= 400:
        for i in range(rows):
            for j in range(cols):
                v = values[i, j]
                text = "nan" if not np.isfinite(v) else f"{v:.2f}"
                if half_widths is not None and np.isfinite(half_widths[i, j]):
                    text += f"\n±{half_widths[i, j]:.2f}"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=6 if half_widths is None else 5,
                    color="black" if np.isfinite(v) and (v - lo) / (hi - lo) > 0.6 else "white",
                )
    if half_widths is not None:
        _hatch_wide(ax, half_widths, wide)
        title += f"\n(±: 95% CI half-width; hatched: half-width > {wide:g} or no interval)"
    if hatch is not None and hatch.any():
        _hatch_cells(ax, hatch, hatch_label)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    return save_figure(fig, path_stem)


def _hatch_wide(ax: Any, half_widths: np.ndarray, wide: float) -> None:
    """Hatch (faint white ``//``) the cells whose half-width exceeds ``wide`` or is undefined.

    One patch collection, not a patch per cell: cheap to draw and to save at any size.
    """
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    hw = np.asarray(half_widths, dtype=np.float64)
    rows, cols = np.nonzero(~(hw <= wide))
    cells = [Rectangle((j - 0.5, i - 0.5), 1.0, 1.0) for i, j in zip(rows, cols, strict=True)]
    if cells:
        ax.add_collection(
            PatchCollection(
                cells,
                facecolor="none",
                edgecolor=(1.0, 1.0, 1.0, 0.35),  # faint: the annotation stays readable
                linewidth=0,
                hatch="//",
            )
        )


def _hatch_cells(ax: Any, mask: np.ndarray, label: str) -> None:
    from matplotlib.patches import Rectangle

    for i, j in zip(*np.nonzero(mask), strict=True):
        ax.add_patch(
            Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.85", lw=0)
        )
    proxy = Rectangle((0, 0), 1, 1, fill=False, hatch="///", edgecolor="0.3")
    ax.legend(
        [proxy], [label], loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=7,
        frameon=False,
    )  # fmt: skip


def save_profile_plot(
    profiles: Mapping[str, Sequence[float]],
    path_stem: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xticklabels: Sequence[str] | None = None,
    bands: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> list[Path]:
    """Save one line per series as ``<stem>.png`` and ``<stem>.pdf``.

    ``bands`` (``{series: (low, high)}``, e.g. 95% confidence intervals) are drawn as shaded
    bands in the series' colour and included in the y range.

    The y axis spans the data (not a fixed 0–1: CKA profiles of related models all lie near 1,
    where a 0–1 axis would show nothing); the ylabel says so. Each series has its own colour,
    line style and marker.
    """
    length = max((len(v) for v in profiles.values()), default=1)
    fig, ax = subplots(figsize=(max(5.5, 0.45 * length + 3.5), 4.0))
    bands = bands or {}
    for i, (label, values) in enumerate(profiles.items()):
        (line,) = ax.plot(range(len(values)), values, label=label, **series_style(i))
        if label in bands:
            low, high = bands[label]
            ax.fill_between(range(len(values)), low, high, color=line.get_color(), alpha=0.2)
    if xticklabels is not None:
        ax.set_xticks(range(len(xticklabels)), labels=list(xticklabels), rotation=90, fontsize=7)
    shown = [v for values in profiles.values() for v in values]
    shown += [v for low, high in bands.values() for v in (*low, *high)]
    lo, hi = data_limits(shown)
    ax.set_ylim(lo, hi)
    band_note = "\n(shaded bands: 95% confidence intervals)" if bands else ""
    ax.set_title(title + band_note, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{ylabel} (axis zoomed to the data)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return save_figure(fig, path_stem)


def similarity_folder(location: ProjectLocation, dataset: str, spec: Any) -> Path:
    """Return ``model_similarities/<dataset_slug>/<metric_slug>/``, migrating an older slug.

    A folder written under an older slug of the metric
    (:func:`~sim_consistency.similarity.legacy_metric_slugs`) and no folder under the current
    one: the old folder is renamed (its ``metadata.json`` and HDF5 ``metric_slug`` updated), so
    finished matrices are neither orphaned nor recomputed. Its content key does not involve
    the slug, so it stays current.
    """
    from sim_consistency.similarity import legacy_metric_slugs, metric_slug

    slug = metric_slug(spec)
    folder = location.similarity_dir(dataset, slug)
    if folder.exists():
        return folder
    for old in legacy_metric_slugs(spec):
        legacy = location.similarity_dir(dataset, old)
        meta_path = legacy / METADATA_FILE
        if not meta_path.is_file():
            continue
        try:
            metadata = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # not a finished matrix: left alone, the stage computes a new one
        if metadata.get("metric") not in (None, spec.to_json()):
            continue  # another metric under that name (a cosine RSA with the other corr_method)
        legacy.rename(folder)
        if (folder / MATRIX_H5).is_file():
            import h5py

            with h5py.File(folder / MATRIX_H5, "a", locking=False) as f:
                f.attrs["metric_slug"] = slug
        metadata["metric_slug"] = slug
        write_json(folder / METADATA_FILE, metadata)
        logging.getLogger("sim_consistency.similarity").warning(
            "%s: renamed to %s (Rep2Rep's metric slug)", legacy, folder
        )
        return folder
    return folder
