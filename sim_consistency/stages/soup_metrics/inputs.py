"""Readers of what the upstream stages wrote, each checked before a part runs.

Every reader here identifies its input by content (cache content keys, probe results' and
layer-CKA outputs' content keys, weight-file digests — never sizes or times) and, when the input
is missing or older than the caches it was computed from, records the exact command that
produces it. :class:`Needs` collects these across all requested parts, so one error lists every
command to run (exit 2), before anything is computed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim_consistency.errors import CacheError, DataError, MissingInputError
from sim_consistency.features import read_cache_attrs
from sim_consistency.merging import is_materialised, weights_identity
from sim_consistency.probe.stored import PREDICTIONS_FILE, read_predictions
from sim_consistency.project import dataset_slug
from sim_consistency.stages.soup_metrics.study import Study

__all__ = [
    "Needs",
    "accuracy_record",
    "cache_keys",
    "correctness",
    "layer_cka_grid",
    "layer_cka_inputs",
    "probe_results",
    "require_materialised",
    "weight_identities",
]


@dataclass
class Needs:
    """Missing or stale inputs of a run, each with the command that produces it."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, what: str, command: str) -> None:
        self.items.append((what, command))

    def raise_if_any(self) -> None:
        """Raise one MissingInputError listing every missing input and its command."""
        if not self.items:
            return
        by_command: dict[str, list[str]] = {}
        for what, command in self.items:  # one command may produce several inputs
            by_command.setdefault(command, []).append(what)
        lines = [f"soup_metrics: {len(self.items)} input(s) missing or stale; run, in order:"]
        for command, whats in by_command.items():
            lines.append(f"  * {'; '.join(whats)}:\n      {command}")
        raise MissingInputError("\n".join(lines))


def cache_keys(
    study: Study,
    model_ids: Sequence[str],
    datasets: Sequence[str],
    splits: Sequence[str],
    needs: Needs,
) -> dict[str, str]:
    """Return ``{"<dataset>:<split>:<model>": content_key}`` of these feature caches.

    Missing or invalid caches are added to ``needs`` (one extraction command for them all).
    """
    keys: dict[str, str] = {}
    missing_models: list[str] = []
    missing_splits: list[str] = []
    for dataset in datasets:
        for split in splits:
            for model_id in model_ids:
                attrs = read_cache_attrs(study.location.feature_file(dataset, split, model_id))
                if attrs is None:
                    missing_models.append(model_id)
                    missing_splits.append(split)
                else:
                    keys[f"{dataset}:{split}:{model_id}"] = str(attrs.get("content_key"))
    if missing_models:
        models = list(dict.fromkeys(missing_models))
        needs.add(
            f"feature caches of {', '.join(models)} on {', '.join(datasets)}",
            study.commands.extract(models, datasets, missing_splits),
        )
    return keys


def _probe_dir(study: Study, dataset: str, model_id: str) -> Path:
    from sim_consistency.probe.result_folders import hp_slug

    slug = hp_slug("fast", study.settings.probe_seed)
    return study.location.linear_probe / "single_model" / dataset_slug(dataset) / model_id / slug


def probe_results(
    study: Study, model_ids: Sequence[str], datasets: Sequence[str], needs: Needs
) -> dict[str, str]:
    """Return ``{"<dataset>:<model>": content_key}`` of the fast-probe / head results.

    A result is current when its train and test content keys equal the present caches'; missing
    and stale ones go to ``needs`` (the caches first, then the probes).
    """
    split = study.settings.split
    caches = cache_keys(study, model_ids, datasets, ["train", split], needs)
    keys: dict[str, str] = {}
    todo: list[str] = []
    for dataset in datasets:
        for model_id in model_ids:
            train = caches.get(f"{dataset}:train:{model_id}")
            test = caches.get(f"{dataset}:{split}:{model_id}")
            if train is None or test is None:
                continue  # the extraction command comes first
            folder = _probe_dir(study, dataset, model_id)
            record = _read_json(folder / "results.json")
            if (
                record is None
                or not (folder / PREDICTIONS_FILE).is_file()
                or record.get("train_content_key") != train
                or record.get("test_content_key") != test
            ):
                todo.append(model_id)
                continue
            keys[f"{dataset}:{model_id}"] = str(record["content_key"])
    if todo:
        models = list(dict.fromkeys(todo))
        needs.add(
            f"probe/head results (fast, seed {study.settings.probe_seed}) of {', '.join(models)}",
            study.commands.probe(models, datasets),
        )
    return keys


def accuracy_record(study: Study, model_id: str, dataset: str) -> dict[str, Any]:
    """Return one model's accuracy on ``dataset``: its head's if it has one, else the fast
    probe's on the last block (as ``single_model_evaluation`` wrote them).

    ``n_samples`` is the number of test images (one image is ``1 / n_samples`` of accuracy).
    """
    record = _read_json(_probe_dir(study, dataset, model_id) / "results.json")
    assert record is not None  # checked by probe_results before any part runs
    blocks = record["blocks"]
    n_samples = int(next(iter(blocks.values()))["n_test"])
    if record.get("head") is not None:
        metrics, source = record["head"], "head"
    else:
        attrs = read_cache_attrs(
            study.location.feature_file(dataset, study.settings.split, model_id)
        )
        last = list((attrs or {}).get("block_names", []))[-1:]
        if not last or last[0] not in blocks:
            raise MissingInputError(
                f"{_probe_dir(study, dataset, model_id)}: no probe of the last block "
                f"{last[0] if last else '?'} of {model_id!r}; run "
                + study.commands.probe([model_id], [dataset])
            )
        metrics, source = blocks[last[0]], f"probe:{last[0]}"
    scalars = {k: float(metrics[k]) for k in ("top1", "top5", "balanced_acc") if k in metrics}
    return {"source": source, "n_samples": n_samples, **scalars}


def correctness(study: Study, model_id: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(test row keys, per-row correctness)`` of the model :func:`accuracy_record`
    scores (head, else the last block's probe), from the stored per-row predictions.

    Raises:
        CacheError: the predictions do not give the recorded top-1 (a stale file).
    """
    folder = _probe_dir(study, dataset, model_id)
    record = accuracy_record(study, model_id, dataset)
    try:
        data = read_predictions(folder / PREDICTIONS_FILE)
    except DataError as exc:
        raise CacheError(f"{exc} ({study.commands.probe([model_id], [dataset])})") from None
    if record["source"] == "head":
        pred = data.head_pred
    else:
        pred = data.block_predictions.get(record["source"].removeprefix("probe:"))
    if pred is None:
        raise CacheError(
            f"{folder / PREDICTIONS_FILE}: no predictions of the {record['source']}; rerun "
            + study.commands.probe([model_id], [dataset])
        )
    correct = np.asarray(pred == data.labels)
    if abs(float(correct.mean()) - record["top1"]) > 1e-12:
        raise CacheError(
            f"{folder / PREDICTIONS_FILE}: predictions give top-1 {correct.mean():.6f} but "
            f"results.json records {record['top1']:.6f}; rerun "
            + study.commands.probe([model_id], [dataset])
            + " --force"
        )
    return data.keys, correct


def layer_cka_inputs(
    study: Study, pairs: Sequence[tuple[str, str]], datasets: Sequence[str], needs: Needs
) -> dict[str, str]:
    """Return ``{dataset: content key}`` of the ``layer_cka`` outputs holding these pairs.

    The grids must be of the run's split, hold every pair (either order) and have been computed
    from the present caches of their models; otherwise ``needs`` gets the ``layer_cka`` command.
    """
    models = list(dict.fromkeys(m for pair in pairs for m in pair))
    caches = cache_keys(study, models, datasets, [study.settings.split], needs)
    keys: dict[str, str] = {}
    todo: list[str] = []
    for dataset in datasets:
        meta = _read_json(study.location.layer_cka / dataset_slug(dataset) / "metadata.json")
        stored = {frozenset(p) for p in (meta or {}).get("pairs", [])}
        inputs = (meta or {}).get("input_content_keys", {})
        current = (
            meta is not None
            and meta.get("split") == study.settings.split
            and all(frozenset(p) in stored for p in pairs)
            and all(
                inputs.get(m) == caches.get(f"{dataset}:{study.settings.split}:{m}") for m in models
            )
        )
        if current:
            keys[dataset] = str(meta["content_key"])  # type: ignore[index]
        else:
            todo.append(dataset)
    if todo:
        needs.add(
            f"block×block CKA grids of the soups with their ingredients/base on {', '.join(todo)}",
            study.commands.layer_cka(models, todo),
        )
    return keys


def layer_cka_metadata(study: Study, dataset: str) -> dict[str, Any]:
    """Return the ``metadata.json`` of ``layer_cka``'s outputs for ``dataset``."""
    meta = _read_json(study.location.layer_cka / dataset_slug(dataset) / "metadata.json")
    assert meta is not None  # checked by layer_cka_inputs
    return meta


def layer_cka_grid(
    study: Study, dataset: str, a: str, b: str
) -> tuple[np.ndarray, list[str], list[str]]:
    """Return the (La, Lb) CKA grid of ``a`` vs ``b`` and both block-name lists."""
    import h5py

    path = study.location.layer_cka / dataset_slug(dataset) / "cka_grids.h5"
    with h5py.File(path, "r", locking=False) as f:
        for x, y, transpose in ((a, b, False), (b, a, True)):
            name = f"grids/{x}__vs__{y}"
            if name in f:
                ds = f[name]
                grid = np.asarray(ds[()], dtype=np.float64)
                names_x = [str(n) for n in ds.attrs["block_names_a"]]
                names_y = [str(n) for n in ds.attrs["block_names_b"]]
                if transpose:
                    return grid.T, names_y, names_x
                return grid, names_x, names_y
    raise MissingInputError(f"{path}: no grid of {a!r} vs {b!r}; rerun layer_cka.")


def require_materialised(study: Study, model_ids: Sequence[str], needs: Needs) -> None:
    """Add the ``build_variants`` command for variants not built with their current recipe."""
    stale = [
        m
        for m in model_ids
        if study.specs[m].is_variant
        and not is_materialised(study.specs[m], study.specs, location=study.location)
    ]
    if stale:
        needs.add(f"materialised variants {', '.join(stale)}", study.commands.build(stale))


def weight_identities(study: Study, model_ids: Sequence[str]) -> dict[str, Any]:
    """Return each model's weights identity by content (variant key or file digests)."""
    return {
        m: weights_identity(m, study.specs, location=study.location)
        for m in dict.fromkeys(model_ids)
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
