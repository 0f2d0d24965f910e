"""A combined-probe result folder: a probe on a model set's combined features, or an ensemble.

The work of :mod:`sim_consistency.stages.combined_probe` (which plans the items and owns the
flags). :func:`evaluate_combined` writes ``test_predictions.npz`` (+
``probe_weights.safetensors`` for the probes), ``results.csv`` and ``results.json`` last.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sim_consistency.errors import CacheError, ConfigError, DataError
from sim_consistency.features import open_cache
from sim_consistency.io import atomic_output, atomic_write_text
from sim_consistency.jsonable import jsonable
from sim_consistency.outputs import file_digest
from sim_consistency.probe.combine import combine_features
from sim_consistency.probe.evaluation import (
    _check_pair,
    _load_block,
    probe_metrics,
    top1_interval,
    write_stored_probe,
)
from sim_consistency.probe.linear_probe import classification_metrics, linear_probe_blocks
from sim_consistency.probe.stored import (
    PREDICTIONS_FILE,
    Predictions,
    read_predictions,
    softmax,
    write_predictions,
)
from sim_consistency.threads import threads_metadata

if TYPE_CHECKING:
    from sim_consistency.features.cache import FeatureCache
    from sim_consistency.stages.combined_probe import CombinedItem, CombinedSettings

__all__ = ["align_rows", "ensemble_probabilities", "evaluate_combined"]

log = logging.getLogger("sim_consistency.combined_probe")


def align_rows(reference: np.ndarray, keys: np.ndarray, where: str) -> np.ndarray:
    """Return the indices that put rows with ``keys`` in the order of ``reference``.

    Raises:
        DataError: the two key sets differ (names ``where`` and an example key).
    """
    reference, keys = np.asarray(reference).astype(str), np.asarray(keys).astype(str)
    if reference.size == keys.size and np.array_equal(reference, keys):
        return np.arange(keys.size)
    index = {k: i for i, k in enumerate(keys.tolist())}
    missing = [k for k in reference.tolist() if k not in index]
    if missing or reference.size != keys.size:
        example = missing[0] if missing else sorted(set(keys.tolist()) - set(reference.tolist()))[0]
        raise DataError(
            f"{where}: the rows differ from the first model's ({keys.size} vs {reference.size} "
            f"rows; e.g. key {example!r} is in one only). Models combined must be extracted on "
            "the same samples (same dataset, split and --max_samples)."
        )
    return np.asarray([index[k] for k in reference.tolist()], dtype=np.int64)


def ensemble_probabilities(members: Sequence[Predictions]) -> tuple[np.ndarray, Predictions]:
    """Return ``(mean softmax probabilities (m, C) float64, first member)``, rows aligned.

    Every member is aligned to the first member's row keys; targets and classes must agree.

    Raises:
        DataError: members disagree on rows, labels or classes (names both files).
    """
    first = members[0]
    total = np.zeros(first.logits.shape, dtype=np.float64)
    for member in members:
        where = f"{member.path} vs {first.path}"
        order = align_rows(first.keys, member.keys, str(member.path))
        if not np.array_equal(member.classes, first.classes):
            raise DataError(f"{where}: the probes score different classes; cannot average them.")
        if not np.array_equal(member.labels[order], first.labels):
            raise DataError(f"{where}: the same row keys carry different labels.")
        total += softmax(member.logits[order])
    return total / len(members), first


def _label_block(cache: FeatureCache, block: str) -> str:
    if block == "last":
        return cache.block_names[-1]
    if block not in cache.block_names:
        raise ConfigError(
            f"{cache.path}: --block {block} not in the cache. Use last or one of: "
            f"{', '.join(cache.block_names)}."
        )
    return block


def _combined_probe(settings: CombinedSettings, item: CombinedItem) -> dict[str, Any]:
    trains: list[np.ndarray] = []
    tests: list[np.ndarray] = []
    blocks: list[str] = []
    keys: dict[str, list[str]] = {}
    with open_cache(item.inputs[0]) as train0, open_cache(item.inputs[1]) as test0:
        ref_train, ref_test = train0.keys, test0.keys
        y_train, y_test = train0.labels, test0.labels
    for i, model_id in enumerate(item.model_ids):
        train_file, test_file = item.inputs[2 * i], item.inputs[2 * i + 1]
        with open_cache(train_file) as train, open_cache(test_file) as test:
            _check_pair(train, test)
            block = _label_block(train, settings.block)
            o_tr = align_rows(ref_train, train.keys, str(train.path))
            o_te = align_rows(ref_test, test.keys, str(test.path))
            if not (np.array_equal(train.labels[o_tr], y_train) and
                    np.array_equal(test.labels[o_te], y_test)):  # fmt: skip
                raise CacheError(
                    f"{train.path} / {test.path}: the same row keys carry different labels than "
                    f"in {item.inputs[0]}; re-extract the caches."
                )
            trains.append(_load_block(train, block)[o_tr])
            tests.append(_load_block(test, block)[o_te])
            blocks.append(block)
            keys[model_id] = [train.content_key, test.content_key]
    combined = combine_features(trains, tests, item.combiner, pca_variance=settings.pca_variance)
    try:
        probes = linear_probe_blocks(
            {"combined": combined.train}, y_train, {"combined": combined.test}, y_test,
            protocol=settings.protocol, seed=item.seed, val_proportion=settings.val_proportion,
            device=settings.device, epochs=settings.epochs, batch_size=settings.batch_size,
            search=settings.search,
        )  # fmt: skip
    except DataError as exc:
        raise DataError(f"{item.output_dir}: {exc}") from None
    stored = write_stored_probe(item.output_dir, probes, "combined", ref_test, y_test)
    result = probe_metrics(probes["combined"])
    return {
        "metrics": result,
        "blocks": dict(zip(item.model_ids, blocks, strict=True)),
        "input_content_keys": keys,
        "combiner_settings": {
            "dims": list(combined.dims),
            "d_concat": combined.d_concat,
            "n_components": combined.n_components,
            "explained_variance": combined.explained_variance,
            "pca_variance": settings.pca_variance if item.combiner == "concat_pca" else None,
            "normalisation": "each model's rows L2-normalised, then concatenated"
            + (
                "; standardised and PCA-projected with train statistics"
                if item.combiner == "concat_pca"
                else ""
            ),  # fmt: skip
        },
        "stored_files": stored,
    }


def _ensemble(settings: CombinedSettings, item: CombinedItem) -> dict[str, Any]:
    members = [read_predictions(folder / PREDICTIONS_FILE) for folder in item.inputs]
    for folder, member in zip(item.inputs, members, strict=True):
        record = json.loads((folder / "results.json").read_text())
        expected = record["stored_files"][PREDICTIONS_FILE]["sha256"]
        if file_digest(folder / PREDICTIONS_FILE) != expected:
            raise DataError(
                f"{member.path}: does not match its results.json (sha256 differs); re-run "
                "single_model_evaluation --force for this model."
            )
    probs, first = ensemble_probabilities(members)
    columns = np.searchsorted(first.classes, first.labels)
    metrics = classification_metrics(probs, columns, classes=first.classes.tolist())
    pred = first.classes[probs.argmax(axis=1)]
    with np.errstate(divide="ignore"):
        log_p = np.log(probs)
    predictions = write_predictions(
        item.output_dir / PREDICTIONS_FILE, keys=first.keys, labels=first.labels,
        logits=log_p, classes=first.classes, block=first.block, pred=pred,
    )  # fmt: skip
    return {
        "metrics": {
            **metrics,
            "protocol": settings.protocol,
            "seed": item.seed,
            "n_classes": int(first.classes.size),
            "n_test": int(first.keys.size),
            "estimator": "mean of the members' softmax probabilities (post-softmax averaging)",
            **top1_interval(metrics["top1"], int(first.keys.size)),
        },
        "blocks": {m: members[i].block for i, m in enumerate(item.model_ids)},
        "members": [str(p) for p in item.inputs],
        "input_content_keys": {
            m: json.loads((p / "results.json").read_text())["content_key"]
            for m, p in zip(item.model_ids, item.inputs, strict=True)
        },
        "combiner_settings": {},
        "stored_files": {PREDICTIONS_FILE: {"sha256": file_digest(predictions)}},
    }


def evaluate_combined(settings: CombinedSettings, item: CombinedItem) -> Path:
    """Build one combined result folder; return its ``results.json``."""
    out = item.output_dir
    (out / "results.json").unlink(missing_ok=True)  # no longer complete
    part = (
        _ensemble(settings, item)
        if item.combiner == "ensemble"
        else _combined_probe(settings, item)
    )
    metrics = part.pop("metrics")
    record = {
        "content_key": item.content_key,
        "combiner": item.combiner,
        "dataset": item.dataset,
        "model_set": item.set_name,
        "model_ids": list(item.model_ids),
        "hp_slug": out.name,
        "hyper_parameters": settings.hyper_parameters(item.seed),
        **part,
        "result": metrics,
        **threads_metadata(),
    }
    row = {
        "dataset": item.dataset,
        "combiner": item.combiner,
        "model_set": item.set_name,
        "model_ids": " ".join(item.model_ids),
        "n_models": len(item.model_ids),
        "protocol": settings.protocol,
        "seed": item.seed,
        "hp_slug": out.name,
        **{k: metrics.get(k) for k in ("top1", "top5", "balanced_acc", "weight_decay", "lr",
                                       "val_top1", "n_train", "n_test", "n_classes")},
        "n_components": record["combiner_settings"].get("n_components"),
        "d_concat": record["combiner_settings"].get("d_concat"),
    }  # fmt: skip
    with atomic_output(out / "results.csv") as tmp:
        pd.DataFrame([row]).to_csv(tmp, index=False)
    path = atomic_write_text(
        out / "results.json",
        json.dumps(jsonable(record, nonfinite_as_none=True), indent=1, allow_nan=False),
    )
    log.info("%s: %s of %s, top-1 %.4f", path, item.combiner, item.set_name, metrics["top1"])
    return path
