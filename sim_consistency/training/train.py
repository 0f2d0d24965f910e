"""Executing a training run: data in memory, model from its start point, checkpoints out.

:func:`load_training_data` preprocesses a dataset's train/val/test splits once with a model's
eval transform (the model owns its preprocessing, so features extracted later see the same
inputs it was trained on); :func:`train_run` trains one :class:`TrainingRun` from its arch
entry's initialisation or its parent's checkpoint and writes every checkpoint with its metadata:
recipe and key, per-epoch curve, held-out (val) and test accuracy, weight distance to the
starting point, environment.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from sim_consistency.config.models import ModelSpec
from sim_consistency.data import keys_fingerprint, load_dataset, stratified_subset
from sim_consistency.data.dataset import Transform
from sim_consistency.merging.evaluate import PreprocessedSplit, accuracy
from sim_consistency.models import create_model, load_state_dict_file
from sim_consistency.project import ProjectLocation
from sim_consistency.training.distances import weight_distance
from sim_consistency.training.loop import fit, torch_threads
from sim_consistency.training.runs import (
    TRAINING_SCHEMA_VERSION,
    TrainingRun,
    read_checkpoint_metadata,
    write_checkpoint,
)

__all__ = ["TrainingData", "load_training_data", "train_rows", "train_run"]

#: Distance estimator recorded in every checkpoint's metadata.
DISTANCE_ESTIMATOR = (
    "L2 norm of the difference over all parameters (named_parameters; BatchNorm running "
    "statistics excluded), float64; relative = l2 / ||start weights||"
)


@dataclass
class TrainingData:
    """A dataset's splits, preprocessed once for one architecture.

    Attributes:
        dataset: the dataset name (``wds/digits``).
        train: every row of the ``train`` split.
        train_keys: their keys, in row order.
        val: the ``val`` split: held-out score per epoch.
        test: the ``test`` split: reported accuracy.
    """

    dataset: str
    train: PreprocessedSplit
    train_keys: list[str]
    val: PreprocessedSplit
    test: PreprocessedSplit


def load_training_data(
    dataset: str, transform: Transform, *, location: ProjectLocation
) -> TrainingData:
    """Return ``dataset``'s train/val/test splits preprocessed with ``transform``.

    Built-in datasets (``wds/digits``) are built on first use by
    :func:`~sim_consistency.data.load_dataset`. Preprocessing runs single-threaded (see
    :func:`~sim_consistency.training.loop.deterministic`: tiny tensors, shared CPUs).
    """

    def split(name: str) -> PreprocessedSplit:
        rows = load_dataset(dataset, name, location=location, transform=transform)
        return PreprocessedSplit.from_dataset(rows, batch_size=256)

    with torch_threads(1):
        train_keys = list(load_dataset(dataset, "train", location=location).keys)
        return TrainingData(
            dataset=dataset,
            train=split("train"),
            train_keys=train_keys,
            val=split("val"),
            test=split("test"),
        )


def train_rows(labels: npt.ArrayLike, fraction: float, *, seed: int = 0) -> npt.NDArray[np.int64]:
    """Return the training row indices for ``fraction`` of the split (stratified, seeded).

    ``fraction == 1`` is every row; otherwise ``round(fraction · n)`` rows drawn class by class
    with :func:`~sim_consistency.data.stratified_subset`.
    """
    labels = np.asarray(labels)
    if fraction >= 1.0:
        return np.arange(labels.size, dtype=np.int64)
    return stratified_subset(labels, max_samples=max(2, round(fraction * labels.size)), seed=seed)


def _environment(device: torch.device) -> dict[str, Any]:
    import timm

    return {
        "device": str(device),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "torch_threads": 1,  # training runs single-threaded (training.loop.deterministic)
        "python": platform.python_version(),
    }


def train_run(
    run: TrainingRun,
    key: str,
    *,
    specs: Mapping[str, ModelSpec],
    data: TrainingData,
    location: ProjectLocation,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> list[Path]:
    """Train ``run`` and write its checkpoints; return their weight files (snapshots first).

    Args:
        run: the run.
        key: its :func:`~sim_consistency.training.runs.run_key` (stored for idempotence).
        specs: a models config holding ``run.arch`` (architecture and initialisation).
        data: splits preprocessed with the arch's eval transform.
        location: project root; the parent is read from, and checkpoints written to, ``models/``.
        device: where to train.
        progress: show a progress bar.

    Raises:
        MissingInputError: the parent checkpoint does not exist.
        ConfigError: the parent checkpoint does not fit the architecture.
    """
    device = torch.device(device)
    arch = specs[run.arch]
    with torch_threads(1):  # one dummy forward pass; see training.loop.deterministic
        loaded = create_model(arch, specs, device="cpu", location=location)
    model = loaded.model
    start_info: dict[str, Any] = {"init_weights_sha256": loaded.weights_sha256}
    if run.parent is not None:
        model.load_state_dict(
            load_state_dict_file(location.model_weights_file(run.parent)), strict=True
        )
        parent_meta = read_checkpoint_metadata(location, run.parent) or {}
        start_info = {"parent_weights_sha256": parent_meta.get("weights_sha256")}
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    param_names = [name for name, _ in model.named_parameters()]

    rows = train_rows(data.train.labels.numpy(), run.train_fraction)
    rows_t = torch.from_numpy(rows)
    train = PreprocessedSplit(data.train.images[rows_t], data.train.labels[rows_t], 256)
    base: dict[str, Any] = {
        "schema_version": TRAINING_SCHEMA_VERSION,
        "kind": "trained_checkpoint",
        "run_key": key,
        "recipe": run.recipe(),
        "arch_recipe": arch.recipe(),
        "dataset": data.dataset,
        "train_split": "train",
        "heldout_split": "val",
        "test_split": "test",
        "n_train_rows": int(rows.size),
        "train_keys_sha256": keys_fingerprint([data.train_keys[i] for i in rows]),
        **start_info,
        "estimators": {
            "distance_to_start": DISTANCE_ESTIMATOR,
            "train_loss": "mean cross-entropy over the epoch's rows (float64 sum / n)",
            "accuracy": "top-1 of the model's head, eval mode",
        },
        "environment": _environment(device),
    }
    curve: list[dict[str, Any]] = []
    written: list[Path] = []
    started, started_cpu = time.perf_counter(), time.process_time()

    def save(record: dict[str, Any], trained: torch.nn.Module) -> None:
        curve.append(record)
        epoch = record["epoch"]
        if epoch not in run.snapshots and epoch != run.fit.epochs:
            return
        state = {k: v.detach().cpu() for k, v in trained.state_dict().items()}
        model_id = run.snapshot_id(epoch)
        meta = {
            **base,
            "metadata": run.checkpoint_metadata(epoch),
            "curve": list(curve),
            "val_acc": record["heldout_acc"],
            "test_acc": accuracy(trained, data.test, device=device),
            "distance_to_start": weight_distance(state, start, param_names),
            "train_seconds": time.perf_counter() - started,
            "train_cpu_seconds": time.process_time() - started_cpu,
        }
        write_checkpoint(location, model_id, state, meta)
        written.append(location.model_weights_file(model_id))

    fit(
        model,
        train,
        run.fit,
        heldout=data.val,
        device=device,
        on_epoch=save,
        desc=run.model_id,
        progress=progress,
    )
    return written
