"""Training runs: what one run is, its content key, and its checkpoints on disk.

A :class:`TrainingRun` trains one model from a starting point — the random initialisation of a
models-config architecture entry (``parent=None``) or another run's checkpoint — and writes
``models/<model_id>.safetensors`` + ``models/<model_id>.json`` (plus one pair per snapshot
epoch, ``<model_id>_e<k>``), which the models config references with the existing
``checkpoint`` source.

Idempotence follows the feature cache's rule: a run's :func:`run_key` hashes everything that
determines its weights (recipe, architecture entry, dataset, parent's key, code version); a
checkpoint is reused only when its stored key matches, its weights file digests to the stored
``weights_sha256`` and it was trained from the parent's current weights. Files are written
through :func:`~sim_consistency.io.atomic_output`, the JSON last, so a crash never leaves a
checkpoint that looks finished.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from sim_consistency.errors import ConfigError
from sim_consistency.io import atomic_output, atomic_write_text
from sim_consistency.models.checkpoints import load_state_dict_file, state_dict_sha256
from sim_consistency.outputs import json_digest
from sim_consistency.project import ProjectLocation
from sim_consistency.training.loop import FitOptions

__all__ = [
    "ROLES",
    "TRAINING_SCHEMA_VERSION",
    "TrainingRun",
    "read_checkpoint_metadata",
    "run_key",
    "stale_reason",
    "write_checkpoint",
]

log = logging.getLogger(__name__)

TRAINING_SCHEMA_VERSION = 1
"""Bump when training code changes the weights it produces: every run is then retrained."""

Role = Literal["pretrained", "finetuned", "branched"]
ROLES: tuple[str, ...] = ("pretrained", "finetuned", "branched")


@dataclass(frozen=True)
class TrainingRun:
    """One training run of a study.

    Attributes:
        model_id: id of the final checkpoint (and of the models-config entry that loads it).
        arch: models-config entry that defines architecture and random initialisation.
        role: ``pretrained`` (W0 and its snapshots), ``finetuned`` (from W0) or ``branched``
            (from a W0 snapshot of an earlier epoch).
        run_group: the study group (one architecture's W0 and everything forked from it).
        parent: model id the run starts from; ``None``: the arch entry's initialisation.
        fit: optimisation settings.
        train_fraction: fraction of each class's training rows used (seeded, stratified);
            ``1.0``: the whole split.
        snapshots: epochs before the last whose weights are saved as ``<model_id>_e<k>``.
        branch_epoch: epoch of the parent's trajectory the run forks from (``None`` for W0).
        metadata: extra grouping fields copied into every checkpoint's metadata.
    """

    model_id: str
    arch: str
    role: Role
    run_group: str
    fit: FitOptions
    parent: str | None = None
    train_fraction: float = 1.0
    snapshots: tuple[int, ...] = ()
    branch_epoch: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"training run '{self.model_id}'"
        if self.role not in ROLES:
            raise ConfigError(f"{where}: unknown role {self.role!r}. Valid: {', '.join(ROLES)}.")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ConfigError(
                f"{where}: train_fraction must be in (0, 1] (got {self.train_fraction!r})."
            )
        bad = [k for k in self.snapshots if not 1 <= k < self.fit.epochs]
        if bad or list(self.snapshots) != sorted(set(self.snapshots)):
            raise ConfigError(
                f"{where}: snapshots must be increasing epochs in 1..{self.fit.epochs - 1} "
                f"(got {list(self.snapshots)})."
            )

    def snapshot_id(self, epoch: int) -> str:
        """Id of the checkpoint saved after ``epoch`` (the last epoch: ``model_id`` itself)."""
        return self.model_id if epoch == self.fit.epochs else f"{self.model_id}_e{epoch}"

    @property
    def output_ids(self) -> list[str]:
        """Ids of every checkpoint the run writes: snapshots first, then the final one."""
        return [self.snapshot_id(k) for k in (*self.snapshots, self.fit.epochs)]

    @property
    def start_epoch(self) -> int:
        """Epochs of training behind the starting point (the branch epoch, 0 for W0)."""
        return self.branch_epoch or 0

    def recipe(self) -> dict[str, Any]:
        """The run as plain JSON: everything of it that determines its weights."""
        return {
            "model_id": self.model_id,
            "arch": self.arch,
            "parent": self.parent,
            "train_fraction": self.train_fraction,
            "snapshots": list(self.snapshots),
            "fit": self.fit.to_json(),
        }

    def checkpoint_metadata(self, epoch: int) -> dict[str, Any]:
        """Grouping fields of the checkpoint saved after ``epoch`` (also put in the config)."""
        return {
            **dict(self.metadata),
            "role": self.role,
            "run_group": self.run_group,
            "parent": self.parent,
            "branch_epoch": self.branch_epoch,
            "epoch": epoch,
            "analysis_epoch": self.start_epoch + epoch,
            "lr": self.fit.lr,
            "seed": self.fit.seed,
            "schedule": self.fit.schedule,
            "train_fraction": self.train_fraction,
        }


def run_key(
    run: TrainingRun, *, arch_recipe: Mapping[str, Any], dataset: str, parent_key: str | None
) -> str:
    """Return the content key of ``run``: sha256 of everything that determines its weights.

    Args:
        run: the run.
        arch_recipe: ``ModelSpec.recipe()`` of ``run.arch`` (architecture, head, image size).
        dataset: the training dataset name (its builder version is part of its rows' identity).
        parent_key: the parent run's key (``None`` for a run from the initialisation).
    """
    from sim_consistency.data.digits import BUILDER_VERSION

    return json_digest(
        {
            "schema_version": TRAINING_SCHEMA_VERSION,
            "recipe": run.recipe(),
            "arch": dict(arch_recipe),
            "dataset": dataset,
            "digits_builder_version": BUILDER_VERSION,
            "parent_key": parent_key,
        }
    )


def read_checkpoint_metadata(location: ProjectLocation, model_id: str) -> dict[str, Any] | None:
    """Return the stored metadata of checkpoint ``model_id``, or ``None`` if absent/unreadable."""
    path = location.model_recipe_file(model_id)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable (%s); the run will be retrained", path, exc)
        return None
    return meta if isinstance(meta, dict) else None


def stale_reason(
    location: ProjectLocation, run: TrainingRun, key: str, *, check_weights: bool = True
) -> str | None:
    """Return why ``run``'s checkpoints cannot be reused, or ``None`` if they are current.

    Current means: every output's JSON holds ``key``, its weights file exists and (with
    ``check_weights``) digests to the stored ``weights_sha256``, and the parent's stored
    weights digest is the one the run was trained from.
    """
    for model_id in run.output_ids:
        meta = read_checkpoint_metadata(location, model_id)
        weights = location.model_weights_file(model_id)
        if meta is None or not weights.is_file():
            return f"{model_id}: not trained yet"
        if meta.get("run_key") != key:
            return f"{model_id}: recipe changed (stored key {str(meta.get('run_key'))[:12]})"
        if check_weights and state_dict_sha256(load_state_dict_file(weights)) != meta.get(
            "weights_sha256"
        ):
            return f"{weights}: weights differ from the recorded digest"
    if run.parent is not None:
        parent = read_checkpoint_metadata(location, run.parent)
        final = read_checkpoint_metadata(location, run.model_id) or {}
        if parent is None or parent.get("weights_sha256") != final.get("parent_weights_sha256"):
            return f"{run.model_id}: parent {run.parent} changed since it was trained"
    return None


def write_checkpoint(
    location: ProjectLocation,
    model_id: str,
    state_dict: Mapping[str, torch.Tensor],
    metadata: Mapping[str, Any],
) -> str:
    """Write ``models/<model_id>.safetensors`` then ``models/<model_id>.json``; return the digest.

    The JSON (``metadata`` plus ``model_id`` and ``weights_sha256``) is written last, so a
    checkpoint without it is never taken for a finished one.
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    digest = state_dict_sha256(tensors)
    with atomic_output(location.model_weights_file(model_id)) as tmp:
        save_file(tensors, str(tmp))
    body = {**metadata, "model_id": model_id, "weights_sha256": digest}
    atomic_write_text(location.model_recipe_file(model_id), json.dumps(body, indent=2) + "\n")
    return digest
