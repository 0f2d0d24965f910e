"""Stage: train the demo's own small real models on digits (W0, fine-tuned, branched runs).

``python scripts/train_demo_models.py --project_root DIR [--study FILE] [--write_models_config
configs/models/demo_trained.json] [--force]`` trains every run of the study
(:data:`~sim_consistency.training.DEMO_STUDY` unless ``--study`` gives a JSON with other field
values) into ``models/<id>.safetensors`` + ``models/<id>.json``. The models config that loads
them — ``configs/models/demo_trained.json`` for the default study, paths relative to the project
root — is (re)written by ``--write_models_config``, which replaces the study's own entries and
keeps every other entry of an existing file (e.g. the variants built from these models).

Flow: :func:`plan` lists the runs whose checkpoints are missing or stale (content key, weight
digest, parent's weights), plus every run forked from one of them; :func:`run_item` trains one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim_consistency.errors import ConfigError
from sim_consistency.outputs import note_reused
from sim_consistency.runtime import (
    Datasets,
    Device,
    Force,
    Launcher,
    Stage,
    Threads,
    Wandb,
    option,
    run_stage,
)

if TYPE_CHECKING:
    from sim_consistency.launch import LaunchReport
    from sim_consistency.tracking import Tracker
    from sim_consistency.training import DemoStudy, TrainingData, TrainingRun

__all__ = [
    "STAGE",
    "TrainSettings",
    "WorkItem",
    "main",
    "plan",
    "run_item",
    "summary_rows",
]

log = logging.getLogger("sim_consistency.train_demo_models")


@dataclass(frozen=True, kw_only=True)
class TrainSettings(Datasets, Device, Threads, Force, Launcher, Wandb):
    """Everything a train_demo_models run depends on.

    ``study`` is a :class:`~sim_consistency.training.DemoStudy` once validated (``--study``
    names a JSON file of its fields; default: the built-in study, on ``--datasets``).
    """

    study: Any = option(
        "JSON with DemoStudy fields", default=None, shown_default="the built-in study"
    )
    write_models_config: Path | None = option(
        "write/update this models config with the trained checkpoints' entries", default=None
    )
    progress: bool = option("progress bars", default=True, negatable=True)

    def validated(self) -> TrainSettings:
        from sim_consistency.training import DEMO_STUDY, DemoStudy, load_study

        s = super().validated()
        if s.launcher != "local":
            raise ConfigError(
                "--launcher slurm is not available for train_demo_models (a few CPU minutes); "
                "use --launcher local."
            )
        study = s.study
        if study is None:
            study = DEMO_STUDY
        elif not isinstance(study, DemoStudy):
            study = load_study(study)
        if len(s.datasets) != 1:
            raise ConfigError(
                f"--datasets: training uses exactly one dataset (got {', '.join(s.datasets)})."
            )
        if s.datasets[0] != study.dataset:
            study = DemoStudy(**{**study.__dict__, "dataset": s.datasets[0]})
        return replace(s, study=study)


@dataclass(frozen=True)
class WorkItem:
    """One run to (re)train, with its content key and why."""

    run: TrainingRun
    key: str
    reason: str


def _keys(study: DemoStudy) -> dict[str, str]:
    """Content key of every run of ``study`` (parents hashed into children)."""
    from sim_consistency.training import arch_specs, run_key, study_runs

    specs = arch_specs(study)
    keys: dict[str, str] = {}
    owner: dict[str, str] = {}  # checkpoint id -> run id that writes it
    for run in study_runs(study):
        parent_key = None if run.parent is None else keys[owner[run.parent]]
        keys[run.model_id] = run_key(
            run, arch_recipe=specs[run.arch].recipe(), dataset=study.dataset, parent_key=parent_key
        )
        for output in run.output_ids:
            owner[output] = run.model_id
    return keys


def plan(settings: TrainSettings) -> list[WorkItem]:
    """Return the runs to train, parents first; current ones are skipped (logged)."""
    from sim_consistency.training import stale_reason, study_runs

    keys = _keys(settings.study)
    scheduled: set[str] = set()  # checkpoint ids that will be rewritten
    items: list[WorkItem] = []
    for run in study_runs(settings.study):
        key = keys[run.model_id]
        if settings.force:
            reason: str | None = "forced"
        elif run.parent in scheduled:
            reason = f"parent {run.parent} is retrained"
        else:
            reason = stale_reason(settings.location, run, key)
        if reason is None:
            log.info("%s: up to date, skipped", run.model_id)
            note_reused(run.model_id)
            continue
        scheduled.update(run.output_ids)
        items.append(WorkItem(run, key, reason))
    return items


def run_item(
    settings: TrainSettings, item: WorkItem, data: TrainingData | None = None
) -> list[Path]:
    """Train one run (``data``: its arch's preprocessed splits, loaded once per arch if not
    given)."""
    from sim_consistency.device import resolve_device
    from sim_consistency.training import arch_specs, train_run

    specs = arch_specs(settings.study)
    if data is None:
        data = _training_data(settings, item.run.arch)
    log.info("%s: training (%s)", item.run.model_id, item.reason)
    return train_run(
        item.run,
        item.key,
        specs=specs,
        data=data,
        location=settings.location,
        device=resolve_device(settings.device),
        progress=settings.progress,
    )


#: Preprocessed splits of the last archs trained: the runs of one arch load them once.
_DATA: dict[tuple[str, str], TrainingData] = {}


def _training_data(settings: TrainSettings, arch: str) -> TrainingData:
    key = (repr((settings.project_root, settings.study)), arch)
    if key not in _DATA:
        if len(_DATA) >= 2:
            _DATA.pop(next(iter(_DATA)))
        _DATA[key] = _load_training_data(settings, arch)
    return _DATA[key]


def _load_training_data(settings: TrainSettings, arch: str) -> TrainingData:
    from sim_consistency.models import create_model
    from sim_consistency.training import arch_specs, load_training_data, torch_threads

    specs = arch_specs(settings.study)
    with torch_threads(1):
        loaded = create_model(specs[arch], specs, location=settings.location)
    return load_training_data(settings.study.dataset, loaded.transform, location=settings.location)


def summary_rows(settings: TrainSettings) -> list[dict]:
    """One row per trained checkpoint of the study: role, epochs, accuracies, distance."""
    from sim_consistency.training import read_checkpoint_metadata, study_runs

    rows = []
    for run in study_runs(settings.study):
        for model_id in run.output_ids:
            meta = read_checkpoint_metadata(settings.location, model_id) or {}
            info = meta.get("metadata", {})
            rows.append(
                {
                    "model_id": model_id,
                    "role": info.get("role"),
                    "analysis_epoch": info.get("analysis_epoch"),
                    "val_acc": meta.get("val_acc"),
                    "test_acc": meta.get("test_acc"),
                    "distance_to_start": (meta.get("distance_to_start") or {}).get("relative"),
                }
            )
    return rows


def _track(
    tracker: Tracker, settings: TrainSettings, items: list[WorkItem], report: LaunchReport
) -> None:
    tracker.log_metrics({"n_trained": len(report.results())})
    tracker.log_table("checkpoints", summary_rows(settings))


def _finish(settings: TrainSettings, items: list[WorkItem], report: LaunchReport) -> None:
    """Write the models config (``--write_models_config``) and print the checkpoints' table."""
    from sim_consistency.training import write_models_config

    if settings.write_models_config:
        written = write_models_config(settings.study, settings.write_models_config)
        print(f"train_demo_models: models config written to {written}")
    print(f"train_demo_models: {len(items)} run(s) trained under {settings.location.models}")
    print(f"{'model_id':<24} {'role':<10} {'epoch':>5} {'val':>6} {'test':>6} {'dist':>7}")
    for row in summary_rows(settings):
        print(
            f"{row['model_id']:<24} {row['role'] or '-':<10} {row['analysis_epoch'] or 0:>5} "
            f"{row['val_acc'] or 0:>6.3f} {row['test_acc'] or 0:>6.3f} "
            f"{row['distance_to_start'] or 0:>7.4f}"
        )


STAGE = Stage(
    name="train_demo_models",
    settings=TrainSettings,
    description="Train the demo's own small real models on digits (W0, fine-tuned, branched).",
    details="Writes models/<id>.safetensors + models/<id>.json for every run of the study; "
    "runs whose content key is current are reused (local launcher only).",
    examples=(
        "python scripts/train_demo_models.py --project_root project_root",
        "python scripts/train_demo_models.py --study my_study.json "
        "--write_models_config configs/models/demo_trained.json",
    ),
    plan=plan,
    run=run_item,
    outputs=lambda item: [],
    label=lambda item: item.run.model_id,
    output_root=lambda settings: settings.location.models,
    track=_track,
    finish=_finish,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, plan, train; print a summary table. Returns the exit code."""
    return run_stage(STAGE, argv)
