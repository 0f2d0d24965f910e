"""A linear-probe result folder: probe one model's cached features, write its tables.

The work of the single-model evaluation stage
(:mod:`sim_consistency.stages.single_model_evaluation`, which plans the items and owns the
flags): :func:`evaluate_item` loads one model's train and test caches once, checks they belong
together, probes every requested block and writes ``test_predictions.npz`` and
``probe_weights.safetensors`` (laid out as :mod:`sim_consistency.probe.stored` documents),
``results.csv`` (+ ``accuracy_vs_depth.csv``) and ``results.json`` last, through
:func:`~sim_consistency.io.atomic_output`.

Every accuracy comes with Wilson's 95 % score interval over the test rows (``top1_ci_low``,
``top1_ci_high``; :func:`~sim_consistency.uncertainty.wilson_interval`): it covers the
sampling of test images given the trained probe, not the training randomness (the spread over
seeds, which the aggregation reports). The per-row predictions of every probed block (and the
head) are what paired tests between models (soup metrics) and ensembles are made from.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sim_consistency.data import dataset_dir
from sim_consistency.errors import CacheError, ConfigError, DataError
from sim_consistency.features import open_cache, require_cache_attrs
from sim_consistency.features.cache import FeatureCache
from sim_consistency.finite import check_finite
from sim_consistency.io import atomic_output, atomic_write_text
from sim_consistency.jsonable import jsonable
from sim_consistency.outputs import file_digest, read_json_record
from sim_consistency.probe.head import CLASS_MASK_FILE, cache_head_accuracy, read_class_mask
from sim_consistency.probe.linear_probe import linear_probe_blocks
from sim_consistency.probe.result_folders import PROBE_CODE_VERSION
from sim_consistency.probe.stored import (
    PREDICTIONS_FILE,
    WEIGHTS_FILE,
    write_predictions,
    write_probe_weights,
)
from sim_consistency.threads import threads_metadata

if TYPE_CHECKING:
    from sim_consistency.stages.single_model_evaluation import EvaluationSettings, WorkItem

__all__ = [
    "RESULTS_SCHEMA_VERSION",
    "evaluate_item",
    "probe_metrics",
    "top1_interval",
    "write_stored_probe",
]

log = logging.getLogger("sim_consistency.single_model_evaluation")

#: Version of the layout of ``results.json``. 2: ``top1_ci_low``/``top1_ci_high`` per block and
#: head, ``predictions_file`` (the per-row predictions next to it).
RESULTS_SCHEMA_VERSION = 2


def top1_interval(top1: float, n_test: int) -> dict[str, float]:
    """Return Wilson's 95 % interval of a top-1 accuracy over ``n_test`` rows."""
    from sim_consistency.uncertainty import wilson_interval

    low, high = wilson_interval(int(round(top1 * n_test)), n_test)
    return {"top1_ci_low": low, "top1_ci_high": high}


#: Per-block result entries kept out of results.json (row indices, stored arrays).
_NOT_IN_JSON = (
    "train_indices", "search_indices", "val_indices", "weights", "bias", "test_scores",
    "test_predictions",
)  # fmt: skip


def probe_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """Return one block's probe result as results.json holds it: numbers and settings (no
    row indices or stored arrays), with Wilson's interval of its top-1."""
    metrics = {k: v for k, v in result.items() if k not in _NOT_IN_JSON}
    return {**metrics, **top1_interval(result["top1"], result["n_test"])}


def write_stored_probe(
    out: Path,
    probes: dict[str, dict[str, Any]],
    block: str,
    test_keys: np.ndarray,
    test_labels: np.ndarray,
    *,
    head_pred: np.ndarray | None = None,
) -> dict[str, dict[str, str]]:
    """Write every block's probe weights and test predictions (``block``'s logits) into ``out``.

    Returns ``{file name: {"sha256": …, "block"?: …}}`` for ``results.json``'s
    ``stored_files`` (:mod:`sim_consistency.probe.stored` documents the layouts).
    """
    first = probes[block]
    classes = np.asarray(first["classes"], dtype=np.int64)
    weights = write_probe_weights(
        out / WEIGHTS_FILE, {n: (r["weights"], r["bias"]) for n, r in probes.items()}, classes
    )
    predictions = write_predictions(
        out / PREDICTIONS_FILE, keys=test_keys, labels=test_labels,
        logits=first["test_scores"], classes=classes, block=block,
        block_predictions={n: r["test_predictions"] for n, r in probes.items()},
        head_pred=head_pred,
    )  # fmt: skip
    return {
        WEIGHTS_FILE: {"sha256": file_digest(weights)},
        PREDICTIONS_FILE: {"sha256": file_digest(predictions), "block": block},
    }


def _relabel(settings: EvaluationSettings, item: WorkItem) -> Path:
    """Rewrite a current result's tables with the model's new metadata (numbers unchanged)."""
    record = read_json_record(item.output_dir / "results.json")
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
    metrics = cache_head_accuracy(test, class_mask=mask)
    logits = np.asarray(test.logits)
    columns = logits if mask is None else logits[:, np.asarray(mask, dtype=np.int64)]
    return {
        **metrics,
        **top1_interval(metrics["top1"], len(test.labels)),
        "class_mask": mask is not None,
        "_pred": columns.argmax(axis=1),
    }, None


def evaluate_item(settings: EvaluationSettings, item: WorkItem) -> Path:
    """Probe one model on one dataset with one seed; return the ``results.json`` path.

    An item planned only because the model's config metadata changed is relabelled: its
    tables are rewritten with the new metadata, no number is recomputed.
    """
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
                lrs=settings.lrs or None,
                search=settings.search,
                regularization=settings.regularization,
                reg_lambda=settings.reg_lambda,
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
        test_keys, test_labels = np.asarray(test.keys), np.asarray(test.labels)
    block_results = {}
    for name, result in probes.items():
        block_results[name] = probe_metrics(result)
    head_pred = head.pop("_pred") if head is not None else None
    (item.output_dir / "results.json").unlink(missing_ok=True)  # no longer complete
    stored = write_stored_probe(
        item.output_dir, probes, blocks[-1], test_keys, test_labels, head_pred=head_pred
    )
    record = {
        "schema_version": RESULTS_SCHEMA_VERSION,
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
        "predictions_file": PREDICTIONS_FILE,
        "fewshot_keys": fewshot_keys,
        "validation_keys": val_keys,
        "stored_files": stored,
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
                "top1_ci_low": r.get("top1_ci_low"),
                "top1_ci_high": r.get("top1_ci_high"),
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
                "top1_ci_low": head.get("top1_ci_low"),
                "top1_ci_high": head.get("top1_ci_high"),
                "top5": head["top5"],
                "balanced_acc": head["balanced_acc"],
                "n_test": next(iter(record["blocks"].values()))["n_test"],
                "n_classes": head["n_classes"],
            }
        )
    return rows
