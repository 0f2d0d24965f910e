"""Helpers shared by the similarity stages: cache look-up, block choice, matrix folders (private).

The matrix files themselves are :mod:`sim_consistency.similarity.matrix_files`; the heatmaps
and profile plots :mod:`sim_consistency.figures`. Cheap to import (the stages' ``--help``
path): h5py, pandas and matplotlib load when used.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim_consistency.errors import CacheIntegrityError, ConfigError, MissingInputError
from sim_consistency.figures import save_heatmap, save_profile_plot
from sim_consistency.io import atomic_write_json as write_json
from sim_consistency.outputs import METADATA_FILE
from sim_consistency.project import ProjectLocation

__all__ = [
    "SIMILARITY_CODE_VERSION",
    "cache_attrs",
    "read_similarity_matrix",
    "resolve_block",
    "save_heatmap",
    "save_profile_plot",
    "similarity_folder",
    "write_json",
]

if TYPE_CHECKING:
    import pandas as pd

#: Bump when a change to the similarity code changes the numbers it writes.
# 2: sigma_median by slab selection; 3: U-statistics without the diagonal (exact RBF at small σ);
# 4: mutual k-NN of a constant representation is NaN; 5: linear CKA's feature-space cross
# products summed over 20 fixed random row groups (the jackknife's default groups: --ci reuses
# them), not contiguous chunks (last-bit changes); 6: streamed RBF CKA sums its kernel products
# per block of the same row groups (--ci reuses them; last-bit changes).
SIMILARITY_CODE_VERSION = "6"


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
    """Return the (M, M) matrix stored in ``folder``, indexed by model id.

    :func:`sim_consistency.similarity.matrix_files.read_similarity_matrix`, imported when called
    so that the stages' ``--help`` stays cheap.
    """
    from sim_consistency.similarity.matrix_files import read_similarity_matrix as read

    return read(folder)


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
        from sim_consistency.similarity.matrix_files import MATRIX_H5

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
