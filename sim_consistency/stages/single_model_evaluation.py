"""Stage: linear probes (and head accuracy) of every model on cached features.

``python scripts/single_model_evaluation.py --models_config … --datasets …
[--blocks last|all|<names>] [--seeds 0 1 2] [--protocol fast|rep2rep] [--fewshot_k K]``
reads ``features/<dataset_slug>/{train,test}/<model_id>.h5`` and writes, per model x dataset x
seed, ``results/linear_probe/single_model/<dataset_slug>/<model_id>/<hp_slug>/``:

* ``results.json`` — every block's metrics, chosen hyper-parameters and validation curve, the
  head's accuracy from cached ``/logits`` (when the head scores the dataset's classes, directly
  or through ``class_index_mask.json`` in the dataset folder), the few-shot sample's keys and the
  validation keys (so the absence of leakage can be checked), the
  input caches' content keys and this output's ``content_key``;
* ``results.csv`` — the same as a tidy table, one row per block (``kind=probe``) plus one for the
  head (``kind=head``), with everything needed to aggregate (dataset, model, metadata, seed,
  protocol, block index and depth fraction);
* ``accuracy_vs_depth.csv`` — with more than one block: block index, name, top-1, balanced acc.

Flow: :func:`plan` reads only the caches' attributes, derives each output's content key (input
content keys + protocol and hyper-parameters + :data:`PROBE_CODE_VERSION`) and keeps outputs that
are missing or stale (all with ``--force``); :func:`run_item` loads one model's train and test
caches once, probes every requested block and writes through
:func:`~sim_consistency.io.atomic_output` (``results.json`` last: it marks completion).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sim_consistency.config import load_models_config, select_models
from sim_consistency.data import dataset_dir, read_dataset_list
from sim_consistency.errors import CacheError, ConfigError, DataError
from sim_consistency.features import open_cache, require_cache_attrs
from sim_consistency.features.cache import FeatureCache
from sim_consistency.finite import check_finite
from sim_consistency.io import atomic_output, atomic_write_text, clean_stale_partial
from sim_consistency.jsonable import jsonable
from sim_consistency.launch import LaunchReport
from sim_consistency.probe import (
    CLASS_MASK_FILE,
    PROTOCOLS,
    REP2REP_LRS,
    WEIGHT_DECAY_GRID,
    cache_head_accuracy,
    linear_probe_blocks,
    read_class_mask,
)
from sim_consistency.project import ProjectLocation, dataset_slug
from sim_consistency.stages.cli import launch_planned, parse_stage_args, run_main
from sim_consistency.threads import threads_metadata
from sim_consistency.tracking import Tracker

__all__ = [
    "DEFAULT_SEEDS",
    "PROBE_CODE_VERSION",
    "EvaluationSettings",
    "WorkItem",
    "add_arguments",
    "hp_slug",
    "main",
    "plan",
    "run_item",
    "settings_from_args",
]

log = logging.getLogger("sim_consistency.single_model_evaluation")

#: Bump when a change to the probe code changes the numbers it writes.
# 3: custom L-BFGS for the fast protocol; 4: class-major layout; 5: centred basis.
PROBE_CODE_VERSION = "6"

#: Seeds run when ``--seeds`` is not given: Rep2Rep reports the mean over seeds 0, 1, 2.
DEFAULT_SEEDS: dict[str, tuple[int, ...]] = {"rep2rep": (0, 1, 2), "fast": (0,)}

_SCHEMA_VERSION = 1
_OUTPUT_FILES = ("results.csv", "accuracy_vs_depth.csv", "results.json")


@dataclass(frozen=True)
class EvaluationSettings:
    """Everything a single-model evaluation run depends on, validated (picklable)."""

    project_root: Path
    model_ids: tuple[str, ...]
    datasets: tuple[str, ...]
    blocks: tuple[str, ...] = ("last",)
    seeds: tuple[int, ...] = (0,)
    protocol: str = "fast"
    fewshot_k: int | None = None
    fewshot_seed: int = 0
    val_proportion: float = 0.2
    train_split: str = "train"
    test_split: str = "test"
    device: str = "auto"
    force: bool = False
    epochs: int = 20
    batch_size: int = 1024
    #: Each model's free-form config metadata (role, run_group, …): it labels result rows and
    #: never changes a number, so an edit refreshes the tables without recomputing.
    model_metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def location(self) -> ProjectLocation:
        return ProjectLocation(self.project_root)

    def metadata_of(self, model_id: str) -> dict[str, Any] | None:
        """Return ``model_id``'s current config metadata (``None``: unknown, use the cache's)."""
        if model_id not in self.model_metadata:
            return None
        return json.loads(json.dumps(dict(self.model_metadata[model_id]), default=str))

    def hyper_parameters(self, seed: int) -> dict[str, Any]:
        """Return the protocol settings that determine one seed's numbers (for the key)."""
        hp: dict[str, Any] = {
            "protocol": self.protocol,
            "seed": seed,
            "val_proportion": self.val_proportion,
            "fewshot_k": self.fewshot_k,
            "fewshot_seed": self.fewshot_seed if self.fewshot_k is not None else None,
            "weight_decay_grid": [float(x) for x in WEIGHT_DECAY_GRID],
            "blocks": list(self.blocks),
            "train_split": self.train_split,
            "test_split": self.test_split,
        }
        if self.protocol == "rep2rep":
            hp.update(lrs=list(REP2REP_LRS), epochs=self.epochs, batch_size=self.batch_size)
        return hp


@dataclass(frozen=True)
class WorkItem:
    """One results folder to (re)build: one model on one dataset with one seed."""

    model_id: str
    dataset: str
    seed: int
    train_file: Path
    test_file: Path
    output_dir: Path
    content_key: str
    reason: str  # "missing" | "stale" | "forced" | "metadata" (relabel, no recompute)


def hp_slug(
    protocol: str, seed: int, *, val_proportion: float = 0.2, fewshot_k: int | None = None,
    fewshot_seed: int = 0,
) -> str:  # fmt: skip
    """Return the results folder name of one run, e.g. ``fast_val_0.2_seed_0``.

    Few-shot runs add ``_fewshot_<k>_fsseed_<s>``; the output folder depends only on the
    settings that change the numbers.
    """
    slug = f"{protocol}_val_{val_proportion:g}"
    if fewshot_k is not None:
        slug += f"_fewshot_{fewshot_k}_fsseed_{fewshot_seed}"
    return f"{slug}_seed_{seed}"


def _output_dir(settings: EvaluationSettings, dataset: str, model_id: str, seed: int) -> Path:
    slug = hp_slug(
        settings.protocol,
        seed,
        val_proportion=settings.val_proportion,
        fewshot_k=settings.fewshot_k,
        fewshot_seed=settings.fewshot_seed,
    )
    return settings.location.linear_probe / "single_model" / dataset_slug(dataset) / model_id / slug


def _content_key(train_key: str, test_key: str, hp: dict[str, Any]) -> str:
    payload = {"train": train_key, "test": test_key, "hp": hp, "code": PROBE_CODE_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _stored_record(output_dir: Path) -> dict[str, Any] | None:
    path = output_dir / "results.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _stored_key(output_dir: Path) -> str | None:
    record = _stored_record(output_dir)
    return None if record is None else record.get("content_key")


def plan(settings: EvaluationSettings) -> list[WorkItem]:
    """Return the results to (re)build; reads only cache attributes (no features).

    Raises:
        MissingInputError: a train or test cache does not exist (names the file).
    """
    items: list[WorkItem] = []
    loc = settings.location
    for dataset in settings.datasets:
        for model_id in settings.model_ids:
            train_file = loc.feature_file(dataset, settings.train_split, model_id)
            test_file = loc.feature_file(dataset, settings.test_split, model_id)
            keys = []
            for path in (train_file, test_file):
                attrs = require_cache_attrs(path)
                keys.append(str(attrs.get("content_key", "")))
            for seed in settings.seeds:
                out = _output_dir(settings, dataset, model_id, seed)
                for name in _OUTPUT_FILES:  # a killed run's leftovers, whatever the verdict
                    clean_stale_partial(out / name)
                key = _content_key(keys[0], keys[1], settings.hyper_parameters(seed))
                stored = _stored_key(out)
                if settings.force:
                    reason = "forced"
                elif stored is None:
                    reason = "missing"
                elif stored != key:
                    reason = "stale"
                elif _metadata_changed(settings, model_id, out):
                    reason = "metadata"
                    log.info("%s: model metadata changed; relabelling (no recompute)", out)
                else:
                    log.info("%s: up to date (content key %s…), skipped", out, key[:10])
                    continue
                items.append(
                    WorkItem(model_id, dataset, seed, train_file, test_file, out, key, reason)
                )
    return items


def _metadata_changed(settings: EvaluationSettings, model_id: str, out: Path) -> bool:
    current = settings.metadata_of(model_id)
    record = _stored_record(out)
    return current is not None and record is not None and record.get("metadata") != current


def _relabel(settings: EvaluationSettings, item: WorkItem) -> Path:
    """Rewrite a current result's tables with the model's new metadata (numbers unchanged)."""
    record = _stored_record(item.output_dir)
    assert record is not None
    record["metadata"] = settings.metadata_of(item.model_id)
    all_blocks = list(require_cache_attrs(item.train_file)["block_names"])
    return _write_results(item, settings, record, all_blocks)


def _check_pair(train: FeatureCache, test: FeatureCache) -> None:
    """Raise if the train and test caches cannot be probed together (names both files)."""
    where = f"{train.path} and {test.path}"
    if train.model_id != test.model_id or train.attrs.get("weights_sha256") != test.attrs.get(
        "weights_sha256"
    ):
        raise CacheError(
            f"{where}: train and test come from different models (model_id "
            f"{train.model_id!r} vs {test.model_id!r}, weights "
            f"{str(train.attrs.get('weights_sha256'))[:10]}… vs "
            f"{str(test.attrs.get('weights_sha256'))[:10]}…). Re-extract both with the same "
            "model."
        )
    for attr in ("preprocessing", "pooling"):
        if train.attrs.get(attr) != test.attrs.get(attr):
            raise CacheError(
                f"{where}: the caches were extracted with different {attr} "
                f"({train.attrs.get(attr)!r} vs {test.attrs.get(attr)!r}); re-extract both "
                "with the same config."
            )
    if train.block_names != test.block_names:
        raise CacheError(
            f"{where}: the caches hold different blocks ({train.block_names} vs "
            f"{test.block_names}); re-extract both with the same config."
        )
    for cache in (train, test):
        if len(cache.keys) != len(cache.labels) or len(set(cache.keys)) != len(cache.keys):
            raise CacheError(
                f"{cache.path}: /keys has {len(cache.keys)} entries "
                f"({len(set(cache.keys))} distinct) for {len(cache.labels)} labels; the file is "
                "corrupt. Rebuild it with feature_extraction --force."
            )
    shared = np.intersect1d(train.keys, test.keys)
    if shared.size:
        raise CacheError(
            f"{where}: {shared.size} row key(s) occur in both train and test (e.g. "
            f"{shared[0]!r}); the splits overlap, so test accuracy would be inflated. Check the "
            "dataset's splits."
        )


def _select_blocks(cache: FeatureCache, blocks: tuple[str, ...]) -> list[str]:
    if blocks == ("last",):
        return [cache.block_names[-1]]
    if blocks == ("all",):
        return list(cache.block_names)
    unknown = [b for b in blocks if b not in cache.block_names]
    if unknown:
        raise ConfigError(
            f"{cache.path}: --blocks {' '.join(unknown)} not in the cache. Use last, all or "
            f"names from: {', '.join(cache.block_names)}."
        )
    return list(blocks)


def _load_block(cache: FeatureCache, name: str) -> np.ndarray:
    X = cache.block(name)
    check_finite(
        X,
        f"{cache.path}: block {name!r}",
        row_names=cache.keys,
        hint="Re-extract with feature_extraction --force.",
    )
    return X


def _head_metrics(
    settings: EvaluationSettings, dataset: str, test: FeatureCache, n_classes: int
) -> tuple[dict[str, Any] | None, str | None]:
    """Return ``(metrics, None)`` or ``(None, why the head was not scored)``."""
    if not test.has_logits:
        return None, "no /logits in the cache (model without a classification head)"
    try:
        mask = read_class_mask(dataset_dir(dataset, location=settings.location))
    except ConfigError:  # a dataset kind without a folder of its own
        mask = None
    n_columns = test.logits.shape[1]
    if mask is None and n_columns != n_classes:
        return None, (
            f"head scores {n_columns} classes but the dataset has {n_classes} and there is "
            f"no {CLASS_MASK_FILE} in its folder"
        )
    return {**cache_head_accuracy(test, class_mask=mask), "class_mask": mask is not None}, None


def run_item(settings: EvaluationSettings, item: WorkItem) -> Path:
    """Probe one model on one dataset with one seed; return the ``results.json`` path."""
    if item.reason == "metadata":
        return _relabel(settings, item)
    with open_cache(item.train_file) as train, open_cache(item.test_file) as test:
        _check_pair(train, test)
        blocks = _select_blocks(train, settings.blocks)
        X_train = {name: _load_block(train, name) for name in blocks}
        X_test = {name: _load_block(test, name) for name in blocks}
        try:
            probes = linear_probe_blocks(
                X_train,
                train.labels,
                X_test,
                test.labels,
                protocol=settings.protocol,
                seed=item.seed,
                val_proportion=settings.val_proportion,
                fewshot_k=settings.fewshot_k,
                fewshot_seed=settings.fewshot_seed,
                device=settings.device,
                epochs=settings.epochs,
                batch_size=settings.batch_size,
                progress=True,
            )
        except DataError as exc:
            raise DataError(f"{train.path} / {test.path}: {exc}") from None
        first = probes[blocks[0]]
        head, head_skipped = _head_metrics(settings, item.dataset, test, first["n_classes"])
        metadata = settings.metadata_of(item.model_id)
        if metadata is None:
            metadata = json.loads(train.attrs.get("metadata") or "{}")
        fewshot_keys = val_keys = None
        if settings.fewshot_k is not None:  # saved so that the absence of leakage is checkable
            fewshot_keys = train.keys[first["train_indices"]].tolist()
            val_keys = train.keys[first["val_indices"]].tolist()
        train_key, test_key = train.content_key, test.content_key
        all_blocks = list(train.block_names)
    block_results = {}
    for name, result in probes.items():
        block_results[name] = {
            k: v
            for k, v in result.items()
            if k not in ("train_indices", "search_indices", "val_indices")
        }
    record = {
        "schema_version": _SCHEMA_VERSION,
        "content_key": item.content_key,
        "dataset": item.dataset,
        "model_id": item.model_id,
        "hp_slug": item.output_dir.name,
        "hyper_parameters": settings.hyper_parameters(item.seed),
        "train_file": str(item.train_file),
        "test_file": str(item.test_file),
        "train_content_key": train_key,
        "test_content_key": test_key,
        "metadata": metadata,
        "block_names": blocks,
        "blocks": block_results,
        "head": head,
        "head_skipped": head_skipped,
        "fewshot_keys": fewshot_keys,
        "validation_keys": val_keys,
        "code_version": PROBE_CODE_VERSION,
        "device": settings.device,
        **threads_metadata(),
    }
    path = _write_results(item, settings, record, all_blocks)
    best = max(block_results.values(), key=lambda r: r["top1"])
    log.info(
        "%s: %d block(s), best top-1 %.4f (%s), %s",
        path,
        len(blocks),
        best["top1"],
        settings.protocol,
        f"head top-1 {head['top1']:.4f}" if head else "no head",
    )
    return path


def _write_results(
    item: WorkItem, settings: EvaluationSettings, record: dict[str, Any], all_blocks: list[str]
) -> Path:
    """Write results.csv (+ accuracy_vs_depth.csv), then results.json last (it marks done)."""
    blocks = list(record["block_names"])
    rows = _tidy_rows(item, settings, record, all_blocks)
    out = item.output_dir
    frame = pd.DataFrame(rows)
    (out / "results.json").unlink(missing_ok=True)  # the old run is no longer complete
    with atomic_output(out / "results.csv") as tmp:
        frame.to_csv(tmp, index=False)
    (out / "accuracy_vs_depth.csv").unlink(missing_ok=True)  # never left from an older run
    if len(blocks) > 1:
        depth = frame[frame["kind"] == "probe"][
            ["block_index", "block", "depth_fraction", "top1", "balanced_acc", "weight_decay"]
        ]
        with atomic_output(out / "accuracy_vs_depth.csv") as tmp:
            depth.to_csv(tmp, index=False)
    return atomic_write_text(
        out / "results.json",
        json.dumps(jsonable(record, nonfinite_as_none=True), indent=1, allow_nan=False),
    )


def _tidy_rows(
    item: WorkItem, settings: EvaluationSettings, record: dict[str, Any], all_blocks: list[str]
) -> list[dict[str, Any]]:
    common = {
        "dataset": item.dataset,
        "model_id": item.model_id,
        "protocol": settings.protocol,
        "seed": item.seed,
        "fewshot_k": settings.fewshot_k,
        "val_proportion": settings.val_proportion,
        "hp_slug": item.output_dir.name,
        **{f"meta_{k}": v for k, v in record["metadata"].items()},
    }
    rows = []
    n_blocks = len(all_blocks)
    for name, r in record["blocks"].items():
        index = all_blocks.index(name)
        rows.append(
            {
                **common,
                "kind": "probe",
                "block": name,
                "block_index": index,
                "n_blocks": n_blocks,
                "depth_fraction": (index + 1) / n_blocks,
                "top1": r["top1"],
                "top5": r["top5"],
                "balanced_acc": r["balanced_acc"],
                "weight_decay": r["weight_decay"],
                "lr": r["lr"],
                "val_top1": r["val_top1"],
                "n_train": r["n_train"],
                "n_val": r["n_val"],
                "n_test": r["n_test"],
                "n_classes": r["n_classes"],
            }
        )
    head = record["head"]
    if head is not None:
        rows.append(
            {
                **common,
                "kind": "head",
                "block": "logits",
                "block_index": n_blocks,
                "n_blocks": n_blocks,
                "depth_fraction": None,
                "top1": head["top1"],
                "top5": head["top5"],
                "balanced_acc": head["balanced_acc"],
                "n_test": next(iter(record["blocks"].values()))["n_test"],
                "n_classes": head["n_classes"],
            }
        )
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this stage's own flags (the shared ones come from :mod:`stages.cli`)."""
    parser.add_argument(
        "--blocks",
        nargs="+",
        default=["last"],
        help="last (default), all (accuracy vs depth), or block names",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=None,
        help=f"run seeds (default: {' '.join(map(str, DEFAULT_SEEDS['rep2rep']))} for rep2rep "
        f"as in Rep2Rep, {' '.join(map(str, DEFAULT_SEEDS['fast']))} for fast)",
    )
    parser.add_argument("--protocol", choices=PROTOCOLS, default="fast", help="probe protocol")
    parser.add_argument("--fewshot_k", type=int, default=None, help="k training rows per class")
    parser.add_argument("--fewshot_seed", type=int, default=0, help="seed of the few-shot draw")
    parser.add_argument(
        "--val_proportion", type=float, default=0.2, help="validation fraction of train"
    )
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--test_split", default="test")


def settings_from_args(args: argparse.Namespace) -> EvaluationSettings:
    """Validate parsed flags into :class:`EvaluationSettings` (raises ConfigError)."""
    location = ProjectLocation.resolve(args.project_root)
    specs = load_models_config(args.models_config, base_dir=location.root)
    model_ids = select_models(specs, args.model_key)
    if args.fewshot_k is not None and args.fewshot_k < 1:
        raise ConfigError(f"--fewshot_k must be a positive integer (got {args.fewshot_k}).")
    if not 0.0 < args.val_proportion < 1.0:
        raise ConfigError(f"--val_proportion must be in (0, 1) (got {args.val_proportion}).")
    blocks = tuple(args.blocks)
    if len(blocks) > 1 and ({"last", "all"} & set(blocks)):
        raise ConfigError(
            f"--blocks: 'last' and 'all' cannot be combined with other names (got {blocks})."
        )
    if args.device not in ("auto", "cpu") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: CUDA is not available; use cpu or auto.")
    return EvaluationSettings(
        project_root=location.root,
        model_ids=tuple(model_ids),
        datasets=tuple(read_dataset_list(args.datasets)),
        blocks=blocks,
        seeds=tuple(dict.fromkeys(args.seeds or DEFAULT_SEEDS[args.protocol])),
        protocol=args.protocol,
        fewshot_k=args.fewshot_k,
        fewshot_seed=args.fewshot_seed,
        val_proportion=args.val_proportion,
        train_split=args.train_split,
        test_split=args.test_split,
        device=args.device,
        force=args.force,
        model_metadata={m: dict(specs[m].metadata) for m in model_ids},
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, plan, probe; print a summary. Returns the exit code."""
    args = parse_stage_args(__doc__, add_arguments, argv)

    def log_results(tracker: Tracker, items: list[WorkItem], report: LaunchReport) -> None:
        tracker.log_metrics({"n_results": len(report.results()), "n_failed": report.n_failed})
        tracker.log_table(
            "results",
            [
                {
                    "model_id": i.model_id,
                    "dataset": i.dataset,
                    "seed": i.seed,
                    "results": str(i.output_dir / "results.json"),
                }
                for i in items
            ],
        )

    def body() -> int:
        settings = settings_from_args(args)
        items, report = launch_planned(
            args,
            settings,
            stage="single_model_evaluation",
            plan=plan,
            run_item=partial(run_item, settings),
            label=lambda item: f"{item.model_id}/{dataset_slug(item.dataset)}/seed_{item.seed}",
            outputs=lambda item: [item.output_dir / "results.json"],
            log_results=log_results,
        )
        if args.launcher != "local":
            print(report.summary())
        print(
            f"single_model_evaluation: {len(report.results())} result(s) written under "
            f"{settings.location.linear_probe / 'single_model'} ({len(items)} planned)"
        )
        return 0 if report.is_success else 1

    return run_main(body)
