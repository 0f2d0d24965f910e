"""Stage: probe transfer — a single-model probe trained on one dataset scored on others.

``python scripts/probe_transfer.py --models_config M.json --source_dataset wds/imagenet1k
--target_datasets wds/imagenet-a wds/imagenet-r wds/imagenetv2 wds/imagenet_sketch
[--class_map wds/objectnet=objectnet_map.json] [--seeds …] [--protocol …]``

Reads the stored probe of every model on ``--source_dataset``
(``single_model/<source>/<model>/<hp_slug>/probe_weights.safetensors``, written by
``single_model_evaluation`` with the same ``--protocol``/``--seeds``/``--val_proportion``; the
block of its ``test_predictions.npz``), scores each target dataset's ``--test_split`` cache
(same model, same block) and maps the source classes onto the target's through a class map
(:mod:`sim_consistency.probe.transfer`: ImageNet-A/-R 200-class subsets, ImageNetV2 / -Sketch
identity shipped; ObjectNet's map must be given with ``--class_map``). Writes
``results/linear_probe/transfer/<source_slug>/<target_slug>/<model_id>/<hp_slug>/``:
``results.json`` (top-1, top-5, balanced accuracy, the map used and its digest, the inputs'
content keys), ``results.csv`` (one tidy row) and ``test_predictions.npz`` (logits = the mapped
class scores, classes = the target's labels).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from sim_consistency.errors import ConfigError
from sim_consistency.io import clean_stale_partial
from sim_consistency.outputs import json_digest, plan_reason, stored_key
from sim_consistency.project import dataset_slug
from sim_consistency.runtime import (
    Device,
    Force,
    Launcher,
    Models,
    Stage,
    Threads,
    Wandb,
    option,
    run_stage,
)
from sim_consistency.stages._probe_runs import ProbeRuns, read_single_model_result, single_model_dir

__all__ = ["STAGE", "TRANSFER_CODE_VERSION", "TransferItem", "TransferSettings", "main", "plan"]

log = logging.getLogger("sim_consistency.probe_transfer")

#: Bump when a change to the transfer code changes the numbers it writes.
TRANSFER_CODE_VERSION = "1"


@dataclass(frozen=True, kw_only=True)
class TransferSettings(Models, ProbeRuns, Device, Threads, Force, Launcher, Wandb):
    """Everything a transfer run depends on, validated (picklable)."""

    profile_stage: ClassVar[str] = "probe_transfer"

    source_dataset: str = option("dataset the probes were trained on", default="wds/imagenet1k")
    target_datasets: tuple[str, ...] = option(
        "datasets the probes are scored on", default=(), nargs="+", required=True
    )
    class_maps: tuple[str, ...] = option(
        "DATASET=FILE class maps (JSON list: entry j = source label(s) of target label j; or "
        "ObjectNet's mappings/ folder); override or add to the shipped ImageNet-A/-R/V2/Sketch "
        "maps",
        default=(),
        nargs="+",
        flag="--class_map",
    )
    #: ``{target: class map}`` resolved by :meth:`validated` (shipped or from ``--class_map``).
    maps: Mapping[str, tuple[tuple[int, ...], ...]] = field(default_factory=dict)
    #: ``{target: where its map comes from}``.
    map_sources: Mapping[str, str] = field(default_factory=dict)

    def validated(self) -> TransferSettings:
        from sim_consistency.data import read_dataset_list
        from sim_consistency.probe.transfer import SHIPPED_MAPS, read_class_map, shipped_class_map

        s = super().validated()
        targets = tuple(read_dataset_list(s.target_datasets))
        given: dict[str, Path] = {}
        for spec in s.class_maps:
            dataset, sep, file = spec.partition("=")
            if not sep or not dataset or not file:
                raise ConfigError(f"--class_map {spec!r}: expected DATASET=FILE.")
            given[dataset] = Path(file).resolve()
        stray = sorted(set(given) - set(targets))
        if stray:
            raise ConfigError(
                f"--class_map: {', '.join(stray)} is not among --target_datasets "
                f"({', '.join(targets)})."
            )
        maps, sources = {}, {}
        for target in targets:
            if target in given:
                maps[target], sources[target] = read_class_map(given[target]), str(given[target])
                continue
            shipped = shipped_class_map(target)
            if shipped is None:
                raise ConfigError(
                    f"--target_datasets {target}: no class map is shipped for it (shipped: "
                    f"{', '.join(['wds/imagenet1k', 'wds/imagenetv2', 'wds/imagenet_sketch', *SHIPPED_MAPS])}"
                    "; ObjectNet's is built from its mappings/ folder: --class_map "
                    "wds/objectnet=/path/to/objectnet-1.0/mappings). Give one: --class_map "
                    f"{target}=FILE.json."
                )
            maps[target] = shipped
            sources[target] = f"shipped:{SHIPPED_MAPS.get(target, 'identity-1000')}"
        return replace(s, target_datasets=targets, maps=maps, map_sources=sources)


@dataclass(frozen=True)
class TransferItem:
    """One results folder: one model's source probe scored on one target dataset, one seed."""

    model_id: str
    target: str
    seed: int
    source_dir: Path
    target_file: Path
    output_dir: Path
    content_key: str
    reason: str


def plan(settings: TransferSettings) -> list[TransferItem]:
    """Return the results to (re)build; reads only source results.json and cache attributes.

    Raises:
        MissingInputError: a source probe result or a target cache is missing (names it and
            the command that makes it).
    """
    from sim_consistency.features import require_cache_attrs
    from sim_consistency.probe.result_folders import PROBE_CODE_VERSION

    items: list[TransferItem] = []
    loc = settings.location
    for model_id in settings.model_ids:
        for seed in settings.seeds:
            slug = settings.slug(seed)
            source = single_model_dir(loc, settings.source_dataset, model_id, slug)
            rerun = (
                f"simc evaluate --models_config {settings.models_config} --datasets "
                f"{settings.source_dataset} --model_key {model_id} --protocol "
                f"{settings.protocol} --val_proportion {settings.val_proportion:g} --seeds {seed}"
            )
            record = read_single_model_result(source, needs="probe transfer", rerun=rerun)
            for target in settings.target_datasets:
                target_file = loc.feature_file(target, settings.test_split, model_id)
                target_key = str(require_cache_attrs(target_file).get("content_key", ""))
                key = json_digest({
                    "source": [record["content_key"], record["stored_files"]],
                    "target": target_key, "map": list(settings.maps[target]),
                    "code": [PROBE_CODE_VERSION, TRANSFER_CODE_VERSION],
                })  # fmt: skip
                out = (
                    loc.linear_probe / "transfer" / dataset_slug(settings.source_dataset)
                    / dataset_slug(target) / model_id / slug
                )  # fmt: skip
                for name in ("results.csv", "test_predictions.npz", "results.json"):
                    clean_stale_partial(out / name)
                reason = plan_reason(
                    out, key, stored_key(out / "results.json"), force=settings.force
                )
                if reason is not None:
                    items.append(
                        TransferItem(model_id, target, seed, source, target_file, out, key, reason)
                    )
    return items


def run_item(settings: TransferSettings, item: TransferItem) -> Path:
    """Score one source probe on one target; write its folder; return ``results.json``."""
    import numpy as np
    import pandas as pd

    from sim_consistency.errors import DataError
    from sim_consistency.features import open_cache
    from sim_consistency.io import atomic_output, atomic_write_text
    from sim_consistency.jsonable import jsonable
    from sim_consistency.outputs import file_digest, read_json_record
    from sim_consistency.probe.evaluation import _load_block, top1_interval
    from sim_consistency.probe.linear_probe import classification_metrics
    from sim_consistency.probe.stored import (
        PREDICTIONS_FILE,
        WEIGHTS_FILE,
        read_probe_weights,
        write_predictions,
    )
    from sim_consistency.probe.transfer import project_scores
    from sim_consistency.threads import threads_metadata

    record = read_json_record(item.source_dir / "results.json") or {}
    stored = record.get("stored_files", {})
    weights_file = item.source_dir / WEIGHTS_FILE
    if file_digest(weights_file) != stored.get(WEIGHTS_FILE, {}).get("sha256"):
        raise DataError(
            f"{weights_file}: does not match its results.json (sha256 differs); re-run "
            "single_model_evaluation --force for this model."
        )
    block = stored.get(PREDICTIONS_FILE, {}).get("block") or record["block_names"][-1]
    probes = read_probe_weights(weights_file)
    if block not in probes:
        raise DataError(f"{weights_file}: no probe for block {block!r}.")
    probe = probes[block]
    class_map = settings.maps[item.target]
    where = f"class map of {item.target} ({settings.map_sources[item.target]})"
    with open_cache(item.target_file) as cache:
        if block not in cache.block_names:
            raise DataError(
                f"{item.target_file}: no block {block!r} (the source probe's); re-extract the "
                "target with the same model config."
            )
        X = _load_block(cache, block)
        labels, keys, target_key = cache.labels, cache.keys, cache.content_key
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_map)):
        raise DataError(
            f"{item.target_file}: labels {labels.min()}…{labels.max()} but the {where} has "
            f"{len(class_map)} entries; the map does not fit this dataset."
        )
    scores = project_scores(probe.scores(X), probe.classes, class_map, where)
    metrics = classification_metrics(scores, labels)
    out = item.output_dir
    (out / "results.json").unlink(missing_ok=True)
    predictions = write_predictions(
        out / PREDICTIONS_FILE, keys=keys, labels=labels, logits=scores,
        classes=np.arange(len(class_map)), block=block, pred=scores.argmax(axis=1),
    )  # fmt: skip
    result = {
        "content_key": item.content_key,
        "model_id": item.model_id,
        "source_dataset": settings.source_dataset,
        "target_dataset": item.target,
        "hp_slug": out.name,
        "hyper_parameters": settings.hyper_parameters(item.seed),
        "block": block,
        "source_result": str(item.source_dir),
        "source_content_key": record.get("content_key"),
        "source_top1": record.get("blocks", {}).get(block, {}).get("top1"),
        "target_file": str(item.target_file),
        "target_content_key": target_key,
        "class_map": settings.map_sources[item.target],
        "class_map_digest": json_digest(list(class_map)),
        "n_target_classes": len(class_map),
        "n_source_classes": int(probe.classes.size),
        "n_test": int(labels.size),
        "projection": "max of the mapped source scores per target class (probe scores on "
        "L2-normalised rows, float64)",
        **metrics,
        **top1_interval(metrics["top1"], int(labels.size)),
        "stored_files": {PREDICTIONS_FILE: {"sha256": file_digest(predictions), "block": block}},
        **threads_metadata(),
    }
    row = {
        k: result[k]
        for k in ("model_id", "source_dataset", "target_dataset", "hp_slug", "block", "top1",
                  "top1_ci_low", "top1_ci_high", "top5", "balanced_acc", "source_top1", "n_target_classes", "n_test")
    }  # fmt: skip
    row.update(protocol=settings.protocol, seed=item.seed)
    with atomic_output(out / "results.csv") as tmp:
        pd.DataFrame([row]).to_csv(tmp, index=False)
    path = atomic_write_text(
        out / "results.json",
        json.dumps(jsonable(result, nonfinite_as_none=True), indent=1, allow_nan=False),
    )
    log.info("%s: top-1 %.4f on %s", path, metrics["top1"], item.target)
    return path


STAGE = Stage(
    name="probe_transfer",
    settings=TransferSettings,
    description="Score single-model probes trained on one dataset on others through class maps.",
    details="Writes results/linear_probe/transfer/<source_slug>/<target_slug>/<model_id>/"
    "<hp_slug>/ (results.json, results.csv, test_predictions.npz). Needs the source probes "
    "(single_model_evaluation with the same --protocol/--seeds/--val_proportion) and the "
    "targets' test-split caches. Class maps of ImageNet-A/-R (200 classes), ImageNetV2 and "
    "ImageNet-Sketch (identity) are shipped.",
    examples=(
        "python scripts/probe_transfer.py --models_config M.json --source_dataset "
        "wds/imagenet1k --target_datasets wds/imagenet-a wds/imagenet-r wds/imagenetv2 "
        "wds/imagenet_sketch",
        "python scripts/probe_transfer.py --models_config M.json --target_datasets "
        "wds/objectnet --class_map wds/objectnet=objectnet_to_imagenet1k.json",
    ),
    plan=plan,
    run=run_item,
    outputs=lambda item: [item.output_dir / "results.json"],
    label=lambda item: f"{item.model_id}/{dataset_slug(item.target)}/seed_{item.seed}",
    output_root=lambda settings: settings.location.linear_probe / "transfer",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, plan, score; print a summary. Returns the exit code."""
    return run_stage(STAGE, argv)
