"""The demo study: which small real models ``make demo`` trains on digits, and their config.

Per architecture group (default: ``rn`` = timm ``test_resnet``, with BatchNorm, at 16×16 input,
and ``vit`` = timm ``test_vit`` at 32×32, i.e. 2×2 patches of 16 px; the digits are 8×8, so
both see the whole image and train in seconds per epoch on a CPU):

* ``<g>_init`` — the architecture entry (timm, ``pretrained: false``): a seeded random
  initialisation, the start of pre-training.
* ``<g>_w0`` — the "pretrained" W0: trained on part of the task (``pretrain_fraction`` of each
  class's train rows) for ``pretrain_epochs`` epochs at a constant learning rate; the snapshots
  ``<g>_w0_e<k>`` after each of ``branch_epochs`` are kept.
* ``<g>_ft_lr<lr>_s<seed>`` — fine-tuned from W0 on the whole train split, one per learning rate
  × seed: all from the SAME W0, so soups of them are meaningful.
* ``<g>_br_e<k>_s<seed>`` — branched runs: fine-tuned like the first learning rate, but forked
  from the W0 trajectory at epoch ``k`` (Frankle et al., 2020, "Linear mode connectivity and the
  lottery ticket hypothesis": when does training settle into one basin?). Together with the
  fine-tuned runs at the first learning rate (branch epoch = ``pretrain_epochs``) they give
  two seeds per branch epoch.

:func:`models_config_entries` is the matching models config (``checkpoint`` entries whose
``path`` is relative to the project root, with role, run group, parent, branch and analysis
epoch, learning rate and seed under ``metadata``); ``configs/models/demo_trained.json`` is that
config for :data:`DEMO_STUDY`, written by :func:`write_models_config` (which keeps the
variants added to the file).
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sim_consistency.config.models import ModelSpec, parse_models_config
from sim_consistency.errors import ConfigError, MissingInputError
from sim_consistency.io import atomic_write_text
from sim_consistency.training.loop import FitOptions
from sim_consistency.training.runs import TrainingRun

__all__ = [
    "DEMO_STUDY",
    "DemoStudy",
    "arch_specs",
    "load_study",
    "models_config_entries",
    "study_runs",
    "write_models_config",
]

_ARCH_CLASS = {"test_resnet": "convolutional", "test_convnext": "convolutional"}


@dataclass(frozen=True)
class DemoStudy:
    """The demo's training plan (all runs derive from it; see the module docstring).

    Attributes:
        groups: run group prefix -> ``{"model_name": timm name, "img_size": int}`` (random
            init, ``num_classes`` head).
        num_classes: classifier size.
        dataset: training dataset (splits ``train``/``val``/``test``).
        pretrain_fraction: fraction of each class's train rows W0 sees.
        pretrain_epochs: W0's epochs; W0 is the checkpoint after the last.
        pretrain_lr: W0's constant learning rate.
        branch_epochs: W0 epochs whose snapshots are kept and branched from.
        finetune_epochs: epochs of every fine-tuned / branched run (cosine schedule).
        finetune_fraction: fraction of each class's train rows they see (1.0: all).
        finetune_lrs: learning rates of the fine-tuned runs; branched runs use the first.
        seeds: seeds of the fine-tuned and branched runs.
        pretrain_seed: W0's seed.
        batch_size: rows per step.
        weight_decay: AdamW weight decay.
    """

    groups: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: {
            "rn": {"model_name": "test_resnet", "img_size": 16},
            "vit": {"model_name": "test_vit", "img_size": 32},
        }
    )
    num_classes: int = 10
    dataset: str = "wds/digits"
    pretrain_fraction: float = 0.5
    pretrain_epochs: int = 8
    pretrain_lr: float = 2e-3
    branch_epochs: tuple[int, ...] = (2, 4)
    finetune_epochs: int = 3
    finetune_fraction: float = 1.0
    finetune_lrs: tuple[float, ...] = (1e-3, 3e-4)
    seeds: tuple[int, ...] = (0, 1)
    pretrain_seed: int = 0
    batch_size: int = 64
    weight_decay: float = 0.05

    def __post_init__(self) -> None:
        if not self.groups or not self.finetune_lrs or not self.seeds:
            raise ConfigError(
                "demo study: groups, finetune_lrs and seeds must be non-empty "
                f"(got {dict(self.groups)}, {list(self.finetune_lrs)}, {list(self.seeds)})."
            )
        for group, arch in self.groups.items():
            if not isinstance(arch, Mapping) or set(arch) != {"model_name", "img_size"}:
                raise ConfigError(
                    f'demo study: group \'{group}\' must be {{"model_name": str, "img_size": '
                    f"int}} (got {arch!r})."
                )


#: The study ``make demo`` trains.
DEMO_STUDY = DemoStudy()


def _lr_tag(lr: float) -> str:
    return f"{lr:g}"


def _finetune_run(
    study: DemoStudy, w0: TrainingRun, *, role: str, parent: str, branch: int, lr: float, seed: int
) -> TrainingRun:
    """A fine-tuned (``branch`` = W0's last epoch) or branched run of ``w0``'s group."""
    prefix = (
        f"{w0.run_group}_ft_lr{_lr_tag(lr)}"
        if role == "finetuned"
        else (f"{w0.run_group}_br_e{branch}")
    )
    return TrainingRun(
        model_id=f"{prefix}_s{seed}",
        arch=w0.arch,
        role=role,  # type: ignore[arg-type]
        run_group=w0.run_group,
        parent=parent,
        branch_epoch=branch,
        fit=FitOptions(
            epochs=study.finetune_epochs,
            lr=lr,
            schedule="cosine",
            seed=seed,
            batch_size=study.batch_size,
            weight_decay=study.weight_decay,
        ),
        train_fraction=study.finetune_fraction,
        metadata=w0.metadata,
    )


def study_runs(study: DemoStudy) -> list[TrainingRun]:
    """Return every run of ``study``, parents before children."""
    runs: list[TrainingRun] = []
    for group, arch in study.groups.items():
        w0 = TrainingRun(
            model_id=f"{group}_w0",
            arch=f"{group}_init",
            role="pretrained",
            run_group=group,
            fit=FitOptions(
                epochs=study.pretrain_epochs,
                lr=study.pretrain_lr,
                schedule="constant",
                seed=study.pretrain_seed,
                batch_size=study.batch_size,
                weight_decay=study.weight_decay,
            ),
            train_fraction=study.pretrain_fraction,
            snapshots=tuple(study.branch_epochs),
            metadata={"architecture_class": _ARCH_CLASS.get(arch["model_name"], "transformer")},
        )
        runs.append(w0)
        for lr in study.finetune_lrs:
            for seed in study.seeds:
                runs.append(
                    _finetune_run(
                        study,
                        w0,
                        role="finetuned",
                        parent=w0.model_id,
                        branch=study.pretrain_epochs,
                        lr=lr,
                        seed=seed,
                    )
                )
        for epoch in study.branch_epochs:
            for seed in study.seeds:
                runs.append(
                    _finetune_run(
                        study,
                        w0,
                        role="branched",
                        parent=w0.snapshot_id(epoch),
                        branch=epoch,
                        lr=study.finetune_lrs[0],
                        seed=seed,
                    )
                )
    return runs


def models_config_entries(study: DemoStudy) -> dict[str, dict[str, Any]]:
    """Return the models-config entries of every model ``study`` trains (paths root-relative).

    One timm entry ``<group>_init`` per group (architecture + seeded random initialisation),
    then one ``checkpoint`` entry per written checkpoint, in training order.
    """
    entries: dict[str, dict[str, Any]] = {}
    for group, arch in study.groups.items():
        entries[f"{group}_init"] = {
            "source": "timm",
            "model_name": arch["model_name"],
            "pretrained": False,
            "num_classes": study.num_classes,
            "img_size": arch["img_size"],
            "metadata": {
                "role": "init",
                "run_group": group,
                "analysis_epoch": 0,
                "architecture_class": _ARCH_CLASS.get(arch["model_name"], "transformer"),
            },
        }
    for run in study_runs(study):
        for epoch in (*run.snapshots, run.fit.epochs):
            model_id = run.snapshot_id(epoch)
            entries[model_id] = {
                "source": "checkpoint",
                "arch": run.arch,
                "path": f"models/{model_id}.safetensors",
                "metadata": run.checkpoint_metadata(epoch),
            }
    return entries


def arch_specs(study: DemoStudy) -> dict[str, ModelSpec]:
    """Return the validated ``<group>_init`` entries (what :func:`train_run` builds from)."""
    entries = models_config_entries(study)
    inits = {k: v for k, v in entries.items() if v["source"] != "checkpoint"}
    return parse_models_config(inits, source_name="demo study")


def load_study(path: str | os.PathLike) -> DemoStudy:
    """Read a :class:`DemoStudy` from JSON: an object with any of its fields (others default).

    Raises:
        MissingInputError: the file does not exist.
        ConfigError: not JSON, unknown fields, or invalid values; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: study file not found. Pass --study FILE.")
    raw = _read_json_object(path, "a study")
    allowed = {f.name for f in fields(DemoStudy)}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        close = difflib.get_close_matches(unknown[0], allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else "."
        raise ConfigError(
            f"{path}: unknown study field '{unknown[0]}'{hint} Allowed: {', '.join(sorted(allowed))}."
        )
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    try:
        return DemoStudy(**values)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}).") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {what} is a JSON object (got {type(raw).__name__}).")
    return raw


def write_models_config(study: DemoStudy, path: str | os.PathLike) -> Path:
    """Write the study's models-config entries into ``path`` (atomically), keep its others.

    The study's entries come first, in training order; entries of an existing file that the
    study does not define (variants built from these models, other models) follow unchanged.

    Raises:
        ConfigError: an existing ``path`` is not a JSON object.
    """
    path = Path(path)
    existing = _read_json_object(path, "a models config") if path.is_file() else {}
    entries = models_config_entries(study)
    merged = {**entries, **{k: v for k, v in existing.items() if k not in entries}}
    return atomic_write_text(path, json.dumps(merged, indent=2) + "\n")
