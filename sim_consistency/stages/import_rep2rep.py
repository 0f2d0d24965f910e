"""Stage: bring Rep2Rep's stored outputs into this project (features and similarity matrices).

``python scripts/import_rep2rep.py features --rep2rep_root R --datasets … [--splits train]
[--model_key …]`` reads Rep2Rep's feature folders
``R/features/<dataset_slug>/<model_id>/features_<split>.pt`` (+ ``targets_<split>.pt``) and
writes each as a feature cache ``features/<dataset_slug>/<split>/<model_id>.h5`` with one block,
``rep2rep`` (float32, rows in Rep2Rep's order). Row keys are the local dataset's keys when that
dataset split is here with the same number of rows (its labels must equal the targets), so
imported and natively extracted models align; otherwise ``rep2rep:<dataset>:<split>:<row>``.
The cache's content key hashes both files' bytes and the keys: an unchanged import is skipped,
a changed one rebuilt.

``python scripts/import_rep2rep.py similarities --rep2rep_root R --datasets …`` reads
``R/model_similarities/<dataset_slug>/<method_key>/similarity_matrix.pt`` with its model ids
(``model_ids.txt`` in the same folder, one per line, or ``--model_ids FILE``) and writes our
``model_similarities/<dataset_slug>/<method_key>/`` (HDF5 + CSV + ``metadata.json``), which the
consistency stage reads like its own. Rep2Rep's method keys are our metric slugs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sim_consistency.errors import ConfigError, MissingInputError, SimcError
from sim_consistency.io import atomic_output
from sim_consistency.outputs import file_digest, json_digest, plan_reason, stored_key
from sim_consistency.project import ProjectLocation, dataset_slug
from sim_consistency.runtime import Datasets, Force, Stage, option, run_stage_group
from sim_consistency.stages._similarity_io import SIMILARITY_CODE_VERSION

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "FEATURES",
    "SIMILARITIES",
    "ImportFeaturesSettings",
    "ImportSimilaritiesSettings",
    "import_features",
    "import_similarities",
    "main",
]

log = logging.getLogger("sim_consistency.import_rep2rep")
#: Bump when the import writes different numbers or keys for the same files.
IMPORT_CODE_VERSION = "1"
_BLOCK = "rep2rep"


def _load_tensor(path: Path, ndim: int) -> np.ndarray:
    import importlib

    import numpy as np
    import torch

    # Rep2Rep saves its similarity matrices as pickled numpy arrays: allow exactly numpy's
    # array reconstruction, nothing else, in the weights-only unpickler
    # (numpy 1, Rep2Rep's, names the function numpy.core.multiarray._reconstruct).
    reconstruct = importlib.import_module("numpy._core.multiarray")._reconstruct
    numpy_array: list = [np.ndarray, np.dtype, reconstruct]
    numpy_array += [(reconstruct, "numpy.core.multiarray._reconstruct")]
    numpy_array += [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64")]
    try:
        with torch.serialization.safe_globals(numpy_array):
            value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"{path}: cannot read this Rep2Rep file ({type(exc).__name__}: {exc})."
        ) from exc
    array = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.ndim != ndim:
        raise ConfigError(f"{path}: expected a {ndim}-d tensor (got shape {array.shape}).")
    return array


def _row_keys(
    location: ProjectLocation, dataset: str, split: str, targets: np.ndarray
) -> tuple[list[str], str]:
    """The local dataset's keys when it matches the rows, else positional keys."""
    import numpy as np

    from sim_consistency.data import load_dataset

    try:
        data = load_dataset(dataset, split, location=location)
    except SimcError:
        data = None
    n = len(targets)
    if data is not None and len(data) == n:
        if not np.array_equal(np.asarray(data.labels), targets):
            raise ConfigError(
                f"{dataset}:{split}: Rep2Rep's targets differ from the local dataset's labels "
                f"({int((np.asarray(data.labels) != targets).sum())} of {n} rows); the rows are "
                "in another order or from another subset."
            )
        return list(data.keys), "dataset"
    return [f"rep2rep:{dataset}:{split}:{i:07d}" for i in range(n)], "positional"


def import_features(
    location: ProjectLocation,
    rep2rep_root: Path,
    dataset: str,
    split: str,
    model_id: str,
    *,
    force: bool = False,
) -> Path | None:
    """Import one Rep2Rep feature folder into the cache; return the file (None if up to date).

    Raises:
        MissingInputError: the folder or its ``features_<split>.pt`` / ``targets_<split>.pt``
            is missing.
        ConfigError: unreadable files, row counts that differ, labels that contradict the
            local dataset.
    """
    import numpy as np

    from sim_consistency.data.subsets import keys_fingerprint
    from sim_consistency.features import FeatureCacheWriter

    folder = Path(rep2rep_root) / "features" / dataset_slug(dataset) / model_id
    feats, targs = folder / f"features_{split}.pt", folder / f"targets_{split}.pt"
    for path in (feats, targs):
        if not path.is_file():
            raise MissingInputError(f"{path}: Rep2Rep feature file not found.")
    features = _load_tensor(feats, 2).astype(np.float32)
    targets = _load_tensor(targs, 1).astype(np.int64)
    if len(features) != len(targets):
        raise ConfigError(
            f"{folder}: {len(features)} feature rows but {len(targets)} targets for {split}."
        )
    keys, key_source = _row_keys(location, dataset, split, targets)
    sources = {"features_sha256": file_digest(feats), "targets_sha256": file_digest(targs)}
    key = json_digest(
        {
            "source": "rep2rep_import",
            **sources,
            "model_id": model_id,
            "dataset": dataset,
            "split": split,
            "rows_fingerprint": keys_fingerprint(keys),
            "code_version": IMPORT_CODE_VERSION,
        }
    )
    output = location.feature_file(dataset, split, model_id)
    if plan_reason(output, key, stored_key(output), force=force) is None:
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(output) as tmp:
        writer = FeatureCacheWriter(
            tmp,
            block_dims={_BLOCK: features.shape[1]},
            n_classes=None,
            storage_dtype="float32",
            expected_rows=len(features),
        )
        try:
            for start in range(0, len(features), 4096):
                stop = start + 4096
                writer.append(keys[start:stop], targets[start:stop], {_BLOCK: features[start:stop]})
            writer.finalize(
                {
                    "model_id": model_id,
                    "content_key": key,
                    "recipe": {"source": "rep2rep_import", "folder": str(folder), **sources},
                    "weights_sha256": "",
                    "preprocessing": {"library": "rep2rep (imported)"},
                    "pooling": "imported",
                    "block_pooling": {_BLOCK: "imported"},
                    "rep2rep": {"imported_from": str(feats), "normalization": "as stored"},
                    "dataset": dataset,
                    "split": split,
                    "subset": {"row_keys": key_source, "rows_fingerprint": keys_fingerprint(keys)},
                    "code_version": IMPORT_CODE_VERSION,
                    "metadata": "{}",
                }
            )
        finally:
            writer.close()
    log.info("%s: imported %d rows x %d from %s", output, *features.shape, feats)
    return output


def import_similarities(
    location: ProjectLocation,
    rep2rep_root: Path,
    dataset: str,
    *,
    model_ids_file: Path | None = None,
    methods: Sequence[str] | None = None,
) -> list[Path]:
    """Import every ``similarity_matrix.pt`` of one dataset; return the written folders.

    Raises:
        MissingInputError: no Rep2Rep similarity folder for ``dataset``, or no model ids.
        ConfigError: a matrix that is not square or does not match its model ids.
    """
    import numpy as np

    from sim_consistency.similarity.matrix_files import write_similarity_matrix

    root = Path(rep2rep_root) / "model_similarities" / dataset_slug(dataset)
    if not root.is_dir():
        raise MissingInputError(f"{root}: no Rep2Rep similarity folder for {dataset}.")
    folders = sorted(p.parent for p in root.glob("*/similarity_matrix.pt"))
    if methods:
        folders = [f for f in folders if f.name in methods]
    if not folders:
        raise MissingInputError(f"{root}: no <method>/similarity_matrix.pt inside.")
    written = []
    for folder in folders:
        ids_file = model_ids_file or folder / "model_ids.txt"
        if not ids_file.is_file():
            raise MissingInputError(
                f"{ids_file}: the model ids of {folder / 'similarity_matrix.pt'} are missing "
                "(one per line, in the matrix's order). Pass --model_ids FILE."
            )
        model_ids = [line.strip() for line in ids_file.read_text().splitlines() if line.strip()]
        matrix = _load_tensor(folder / "similarity_matrix.pt", 2).astype(np.float64)
        if matrix.shape != (len(model_ids), len(model_ids)):
            raise ConfigError(
                f"{folder / 'similarity_matrix.pt'}: shape {matrix.shape} does not match the "
                f"{len(model_ids)} model ids of {ids_file}."
            )
        out = location.similarity_dir(dataset, folder.name)
        key = json_digest(
            {
                "source": "rep2rep_import",
                "matrix_sha256": file_digest(folder / "similarity_matrix.pt"),
                "model_ids": model_ids,
                "code_version": SIMILARITY_CODE_VERSION,
            }
        )
        if plan_reason(out, key, stored_key(out)) is None:
            continue
        out.mkdir(parents=True, exist_ok=True)
        metadata = {
            "content_key": key,
            "dataset": dataset,
            "metric_slug": folder.name,
            "model_ids": model_ids,
            "imported_from": str(folder),
            "code_version": SIMILARITY_CODE_VERSION,
        }
        write_similarity_matrix(out, matrix, model_ids, metadata)
        written.append(out)
    return written


@dataclass(frozen=True, kw_only=True)
class _ImportSettings(Datasets):
    rep2rep_root: Path = option("Rep2Rep's project root", default=None, required=True)
    datasets: tuple[str, ...] = option(
        "dataset names or .txt files with one name per line", default=(), nargs="+", required=True
    )


@dataclass(frozen=True, kw_only=True)
class ImportFeaturesSettings(_ImportSettings, Force):
    """``features``: Rep2Rep feature folders into feature caches."""

    splits: tuple[str, ...] = option("dataset splits", default=("train", "test"), nargs="+")
    model_ids: tuple[str, ...] = option(
        "only these model folders", default=(), flag="--model_key", nargs="+",
        shown_default="every folder",
    )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class ImportSimilaritiesSettings(_ImportSettings):
    """``similarities``: Rep2Rep similarity matrices into model_similarities/."""

    model_ids_file: Path | None = option(
        "model ids file (one per line, the matrices' order)",
        default=None,
        flag="--model_ids",
        type=Path,
        shown_default="model_ids.txt next to each matrix",
    )
    methods: tuple[str, ...] | None = option(
        "method keys to import", default=None, nargs="+", shown_default="all"
    )


@dataclass(frozen=True)
class FeatureImport:
    """One Rep2Rep feature file to import: a model on a dataset split."""

    dataset: str
    split: str
    model_id: str
    output: Path


def plan_features(settings: ImportFeaturesSettings) -> list[FeatureImport]:
    """Return every (dataset, model folder, split) to import; each decides if it is current."""
    items = []
    for dataset in settings.datasets:
        base = Path(settings.rep2rep_root) / "features" / dataset_slug(dataset)
        model_ids = settings.model_ids or sorted(p.name for p in base.glob("*") if p.is_dir())
        if not model_ids:
            raise MissingInputError(f"{base}: no Rep2Rep model folders.")
        for model_id in model_ids:
            for split in settings.splits:
                output = settings.location.feature_file(dataset, split, model_id)
                items.append(FeatureImport(dataset, split, model_id, output))
    return items


def run_features(settings: ImportFeaturesSettings, item: FeatureImport) -> Path | None:
    """Import one feature file (None: it was up to date)."""
    return import_features(
        settings.location,
        Path(settings.rep2rep_root),
        item.dataset,
        item.split,
        item.model_id,
        force=settings.force,
    )


def run_similarities(settings: ImportSimilaritiesSettings, dataset: str) -> list[Path]:
    """Import every similarity matrix of one dataset; return the written folders."""
    return import_similarities(
        settings.location,
        Path(settings.rep2rep_root),
        dataset,
        model_ids_file=settings.model_ids_file,
        methods=settings.methods,
    )


FEATURES = Stage(
    name="import_rep2rep_features",
    settings=ImportFeaturesSettings,
    description="Import Rep2Rep feature folders as feature caches (block rep2rep).",
    examples=(
        "python scripts/import_rep2rep.py features --rep2rep_root ../rep2rep "
        "--datasets wds/vtab/cifar10 --splits train test",
    ),
    plan=plan_features,
    run=run_features,
    outputs=lambda item: [item.output],
    label=lambda item: f"{item.model_id}@{item.dataset}:{item.split}",
    output_root=lambda settings: settings.location.features,
)

SIMILARITIES = Stage(
    name="import_rep2rep_similarities",
    settings=ImportSimilaritiesSettings,
    description="Import Rep2Rep similarity matrices into model_similarities/.",
    examples=(
        "python scripts/import_rep2rep.py similarities --rep2rep_root ../rep2rep "
        "--datasets wds/vtab/cifar10 wds/vtab/pets",
    ),
    plan=lambda settings: list(settings.datasets),
    run=run_similarities,
    outputs=lambda dataset: [],
    label=str,
    output_root=lambda settings: settings.location.model_similarities,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one import (``features`` or ``similarities``); print what was written."""
    return run_stage_group(
        {"features": FEATURES, "similarities": SIMILARITIES},
        argv,
        description=__doc__.split("\n")[0].removeprefix("Stage: "),
    )
