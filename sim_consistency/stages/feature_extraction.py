"""Stage: block-wise feature extraction into the HDF5 cache.

Writes ``features/<dataset_slug>/<split>/<model_id>.h5`` for every model x dataset x split;
outputs whose content key is current are reused. The work (planning a model's outputs,
filling one file) lives in :mod:`sim_consistency.features.pipeline`, the dry run in
:mod:`sim_consistency.features.inventory`; this module holds the flags and the launch, and
imports neither torch nor h5py until a run starts.

Launch: locally, each model is built once and plans and extracts its outputs in this process.
With ``--launcher slurm`` the submitter plans first (so a rerun submits only what is missing or
stale) and runs one job per model (:class:`ExtractionJob`), or one per model x dataset with
``--job_per model_dataset``; jobs never share an output file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim_consistency.errors import ConfigError
from sim_consistency.runtime import (
    Datasets,
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

if TYPE_CHECKING:
    from sim_consistency.launch import LaunchReport
    from sim_consistency.tracking import Tracker

__all__ = [
    "STAGE",
    "ExtractionJob",
    "ExtractionSettings",
    "WorkItem",
    "main",
    "plan",
    "plan_jobs",
    "run_job",
    "run_model",
]

#: DataLoader workers when ``--num_workers`` is not given: up to 4, leaving a CPU to the model.
DEFAULT_NUM_WORKERS = min(4, max(0, (os.cpu_count() or 1) - 1))


@dataclass(frozen=True, kw_only=True)
class ExtractionSettings(Models, Datasets, Device, Threads, Force, Launcher, Wandb):
    """Everything a feature-extraction run depends on, validated (picklable for SLURM)."""

    splits: tuple[str, ...] = option("dataset splits", default=("train", "test"), nargs="+")
    max_samples: int | None = option(
        "class-stratified subset of at most N rows per split", default=None, type=int
    )
    per_class_cap: int | None = option(
        "at most this many rows per class", default=None, type=int,
        shown_default="ceil(N / classes)",
    )  # fmt: skip
    subset_seed: int = option("seed of the subset draw", default=0, type=int)
    batch_size: int = option("images per forward pass", default=64, type=int)
    dtype: str = option(
        "storage dtype of pooled blocks (float16 falls back per block)",
        default="float16",
        choices=("float16", "float32"),
    )
    #: None: :data:`DEFAULT_NUM_WORKERS` once validated (a library call that builds settings
    #: directly gets no worker processes).
    num_workers: int | None = option(
        "DataLoader worker processes (decode + transform)",
        default=None,
        type=int,
        shown_default="min(4, CPUs - 1)",
    )
    decode_device: str = option(
        "cuda: workers only read the encoded files; JPEG decoding (nvJPEG) and the eval "
        "transform run on the model's GPU (equal to the PIL path within 12/255 per pixel)",
        default="cpu",
        choices=("cpu", "cuda"),
    )
    job_per: str = option(
        "one job per model, or a job array over model x dataset",
        default="model",
        choices=("model", "model_dataset"),
    )
    verify: bool = option(
        "read every existing cache in full while planning (checksums; slow at scale)",
        default=False,
    )
    list_blocks: bool = option(
        "dry run: print blocks, dims and projected cache size; extract nothing", default=False
    )

    def validated(self) -> ExtractionSettings:
        s = super().validated()
        for name, value in (
            ("--batch_size", s.batch_size),
            ("--max_samples", s.max_samples),
            ("--per_class_cap", s.per_class_cap),
        ):
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be a positive integer (got {value}).")
        if s.num_workers is None:
            return replace(s, num_workers=DEFAULT_NUM_WORKERS)
        if s.num_workers < 0:
            raise ConfigError(f"--num_workers must be >= 0 (got {s.num_workers}).")
        return s


@dataclass(frozen=True)
class WorkItem:
    """One output file to (re)build: a model on a dataset split."""

    model_id: str
    dataset: str
    split: str
    output: Path
    content_key: str
    reason: str  # "missing" | "stale" | "invalid" | "forced"
    attrs: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ExtractionJob:
    """One launcher work item: a model on some datasets (every split), i.e. one SLURM job.

    ``outputs`` are the files planned for it before a SLURM submission (empty locally, where
    the job plans its own outputs).
    """

    model_id: str
    datasets: tuple[str, ...]
    per_dataset: bool = False
    outputs: tuple[Path, ...] = field(default=(), compare=False)

    def __str__(self) -> str:
        return f"{self.model_id}@{self.datasets[0]}" if self.per_dataset else self.model_id


def run_model(settings: ExtractionSettings, model_id: str, *, progress: bool = True) -> list[Path]:
    """Plan and extract every missing/stale output of one model (see :mod:`.pipeline`)."""
    from sim_consistency.features.pipeline import run_model as run

    return run(settings, model_id, progress=progress)


def run_job(
    settings: ExtractionSettings, job: ExtractionJob, *, progress: bool | None = None
) -> list[Path]:
    """Extract the missing/stale outputs of ``job`` (what one SLURM job runs; picklable)."""
    if progress is None:
        progress = settings.launcher == "local"
    return run_model(replace(settings, datasets=job.datasets), job.model_id, progress=progress)


def plan_jobs(
    settings: ExtractionSettings, items: Sequence[WorkItem], *, per_dataset: bool = False
) -> list[ExtractionJob]:
    """Group planned outputs into jobs (per model, or per model x dataset)."""
    jobs: dict[tuple[str, tuple[str, ...]], list[Path]] = {}
    for item in items:
        datasets = (item.dataset,) if per_dataset else settings.datasets
        jobs.setdefault((item.model_id, datasets), []).append(item.output)
    return [ExtractionJob(m, d, per_dataset, tuple(paths)) for (m, d), paths in jobs.items()]


def plan(settings: ExtractionSettings) -> list[ExtractionJob]:
    """Return the launch's jobs.

    Locally every model is one job (per dataset with ``--job_per model_dataset``) that builds
    its model once and plans its own outputs: no separate planning pass. For SLURM every
    output is planned here first and only jobs with work are submitted.
    """
    per_dataset = settings.job_per == "model_dataset"
    if settings.launcher == "local":
        if per_dataset:
            return [
                ExtractionJob(m, (d,), True) for m in settings.model_ids for d in settings.datasets
            ]
        return [ExtractionJob(m, settings.datasets) for m in settings.model_ids]
    from sim_consistency.features.pipeline import plan_outputs

    return plan_jobs(settings, plan_outputs(settings), per_dataset=per_dataset)


def _list_blocks(settings: ExtractionSettings) -> int | None:
    if not settings.list_blocks:
        return None
    from sim_consistency.features.inventory import list_blocks

    print(list_blocks(settings))
    return 0


def _track(
    tracker: Tracker, settings: ExtractionSettings, jobs: list[ExtractionJob], report: LaunchReport
) -> None:
    from sim_consistency.features.pipeline import written_rows

    written = [path for paths in report.results() for path in paths]
    tracker.log_metrics(
        {
            "n_files_written": len(written),
            "n_jobs": len(report.outcomes),
            "n_jobs_failed": report.n_failed,
            "seconds": time.perf_counter() - _STARTED[0],
        }
    )
    tracker.log_table("written_files", written_rows(written))


_STARTED = [time.perf_counter()]


STAGE = Stage(
    name="feature_extraction",
    settings=ExtractionSettings,
    description="Extract block-wise features of every model on every dataset split into the "
    "HDF5 cache.",
    examples=(
        "python scripts/feature_extraction.py --models_config configs/models/demo.json "
        "--datasets wds/digits --max_samples 500",
        "python scripts/feature_extraction.py --models_config M.json --datasets D.txt "
        "--list_blocks",
        "python scripts/feature_extraction.py --models_config M.json --datasets D.txt "
        "--launcher slurm --slurm_config debug --job_per model_dataset --no_wait",
    ),
    plan=plan,
    run=run_job,
    outputs=lambda job: list(job.outputs),
    label=str,
    output_root=lambda settings: settings.location.features,
    intercept=_list_blocks,
    track=_track,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, plan, extract; print a summary. Returns the exit code."""
    _STARTED[0] = time.perf_counter()
    return run_stage(STAGE, argv)
