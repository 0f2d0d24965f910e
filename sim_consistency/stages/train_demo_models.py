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

import argparse
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from sim_consistency.data import read_dataset_list
from sim_consistency.errors import ConfigError
from sim_consistency.project import ProjectLocation
from sim_consistency.stages.cli import (
    parse_stage_args,
    run_main,
)

from sim_consistency.tracking import start_tracking
from sim_consistency.training import (
    DEMO_STUDY,
    DemoStudy,
    TrainingData,
    TrainingRun,
    arch_specs,
    load_study,
    load_training_data,
    read_checkpoint_metadata,
    run_key,
    stale_reason,
    study_runs,
    torch_threads,
    train_run,
    write_models_config,
)

__all__ = [
    "TrainSettings",
    "WorkItem",
    "add_arguments",
    "main",
    "plan",
    "run_item",
    "summary_rows",
]

log = logging.getLogger("sim_consistency.train_demo_models")


@dataclass(frozen=True)
class TrainSettings:
    """Everything a train_demo_models run depends on."""

    project_root: Path
    study: DemoStudy = DEMO_STUDY
    device: str = "auto"
    force: bool = False
    progress: bool = True

    @property
    def location(self) -> ProjectLocation:
        return ProjectLocation(self.project_root)


@dataclass(frozen=True)
class WorkItem:
    """One run to (re)train, with its content key and why."""

    run: TrainingRun
    key: str
    reason: str


def _keys(study: DemoStudy) -> dict[str, str]:
    """Content key of every run of ``study`` (parents hashed into children)."""
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
            continue
        scheduled.update(run.output_ids)
        items.append(WorkItem(run, key, reason))
    return items


def run_item(
    settings: TrainSettings, item: WorkItem, data: TrainingData | None = None
) -> list[Path]:
    """Train one run (``data``: its arch's preprocessed splits, loaded if not given)."""
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


def _training_data(settings: TrainSettings, arch: str) -> TrainingData:
    from sim_consistency.models import create_model

    specs = arch_specs(settings.study)
    with torch_threads(1):
        loaded = create_model(specs[arch], specs, location=settings.location)
    return load_training_data(settings.study.dataset, loaded.transform, location=settings.location)


def summary_rows(settings: TrainSettings) -> list[dict]:
    """One row per trained checkpoint of the study: role, epochs, accuracies, distance."""
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This stage's own flags."""
    parser.add_argument(
        "--study", default=None, help="JSON with DemoStudy fields (default: the built-in study)"
    )
    parser.add_argument(
        "--write_models_config",
        default=None,
        help="write/update this models config with the trained checkpoints' entries",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress bars",
    )


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    """Validate parsed flags into :class:`TrainSettings` (raises ConfigError)."""
    study = DEMO_STUDY if args.study is None else load_study(args.study)
    datasets = read_dataset_list(args.datasets)
    if len(datasets) != 1:
        raise ConfigError(
            f"--datasets: training uses exactly one dataset (got {', '.join(datasets)})."
        )
    if datasets[0] != study.dataset:
        study = DemoStudy(**{**study.__dict__, "dataset": datasets[0]})
    return TrainSettings(
        project_root=ProjectLocation.resolve(args.project_root).root,
        study=study,
        device=args.device,
        force=args.force,
        progress=args.progress,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, plan, train; print a summary table. Returns the exit code."""
    args = parse_stage_args(__doc__, add_arguments, argv, needs_models=False)

    def body() -> int:
        if args.launcher != "local":
            raise ConfigError(
                "--launcher slurm is not available for train_demo_models (a few CPU minutes); "
                "use --launcher local."
            )
        settings = settings_from_args(args)
        with start_tracking(
            args.wandb,
            stage="train_demo_models",
            config={"study": asdict(settings.study), "device": settings.device},
            location=settings.location,
        ) as tracker:
            items = plan(settings)
            data: dict[str, TrainingData] = {}
            for item in items:
                if item.run.arch not in data:
                    data[item.run.arch] = _training_data(settings, item.run.arch)
                run_item(settings, item, data[item.run.arch])
            tracker.log_metrics({"n_trained": len(items)})
            tracker.log_table("checkpoints", summary_rows(settings))
        if args.write_models_config:
            written = write_models_config(settings.study, args.write_models_config)
            print(f"train_demo_models: models config written to {written}")
        print(f"train_demo_models: {len(items)} run(s) trained under {settings.location.models}")
        print(f"{'model_id':<24} {'role':<10} {'epoch':>5} {'val':>6} {'test':>6} {'dist':>7}")
        for row in summary_rows(settings):
            print(
                f"{row['model_id']:<24} {row['role'] or '-':<10} {row['analysis_epoch'] or 0:>5} "
                f"{row['val_acc'] or 0:>6.3f} {row['test_acc'] or 0:>6.3f} "
                f"{row['distance_to_start'] or 0:>7.4f}"
            )
        return 0

    return run_main(body)
