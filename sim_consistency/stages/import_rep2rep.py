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

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from sim_consistency.data import load_dataset, read_dataset_list
from sim_consistency.data.subsets import keys_fingerprint
from sim_consistency.errors import ConfigError, MissingInputError, SimcError
from sim_consistency.features import FeatureCacheWriter, read_cache_attrs
from sim_consistency.io import atomic_output, file_sha256
from sim_consistency.project import ProjectLocation, dataset_slug
from sim_consistency.stages._similarity_io import (
    SIMILARITY_CODE_VERSION,
    digest,
    stored_key,
)
from sim_consistency.stages.distance_matrix_computation import write_similarity_matrix

__all__ = ["import_features", "import_similarities", "main"]

log = logging.getLogger("sim_consistency.import_rep2rep")
#: Bump when the import writes different numbers or keys for the same files.
IMPORT_CODE_VERSION = "1"
_BLOCK = "rep2rep"


def _load_tensor(path: Path, ndim: int) -> np.ndarray:
    try:
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
    sources = {"features_sha256": file_sha256(feats), "targets_sha256": file_sha256(targs)}
    key = digest(
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
    existing = read_cache_attrs(output)
    if not force and existing is not None and existing.get("content_key") == key:
        log.info("%s: up to date (content key %s…), skipped", output, key[:10])
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
        key = digest(
            {
                "source": "rep2rep_import",
                "matrix_sha256": file_sha256(folder / "similarity_matrix.pt"),
                "model_ids": model_ids,
                "code_version": SIMILARITY_CODE_VERSION,
            }
        )
        if stored_key(out) == key:
            log.info("%s: up to date, skipped", out)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="import_rep2rep.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("features", "similarities"):
        p = sub.add_parser(name)
        p.add_argument("--project_root", default=None)
        p.add_argument("--rep2rep_root", required=True, help="Rep2Rep's project root")
        p.add_argument("--datasets", nargs="+", required=True, help="names or .txt lists")
        if name == "features":
            p.add_argument("--splits", nargs="+", default=["train", "test"])
            p.add_argument("--model_key", nargs="+", default=None, help="default: every folder")
            p.add_argument("--force", action="store_true")
        else:
            p.add_argument("--model_ids", type=Path, default=None, help="model ids file")
            p.add_argument("--methods", nargs="+", default=None, help="method keys to import")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one import; print what was written. Returns the exit code (2 on bad input)."""
    args = _parser().parse_args(argv)
    try:
        location = ProjectLocation.resolve(args.project_root).create()
        root = Path(args.rep2rep_root)
        datasets = read_dataset_list(args.datasets)
        written: list[Path] = []
        if args.what == "features":
            for dataset in datasets:
                base = root / "features" / dataset_slug(dataset)
                model_ids = args.model_key or sorted(p.name for p in base.glob("*") if p.is_dir())
                if not model_ids:
                    raise MissingInputError(f"{base}: no Rep2Rep model folders.")
                for model_id in model_ids:
                    for split in args.splits:
                        out = import_features(
                            location, root, dataset, split, model_id, force=args.force
                        )
                        written += [out] if out else []
        else:
            for dataset in datasets:
                written += import_similarities(
                    location, root, dataset, model_ids_file=args.model_ids, methods=args.methods
                )
    except SimcError as exc:
        print(f"error: {exc}")
        return 2
    print(f"imported {len(written)} output(s)" + "".join(f"\n  {p}" for p in written))
    return 0
