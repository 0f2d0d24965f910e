"""One door for every stage: run a list of picklable work items locally or on SLURM.

A stage plans its work items (small frozen dataclasses), picks a picklable function of one
item (a module-level function, or ``functools.partial`` over one with the stage's settings)
and calls :func:`launch`; it never needs to know which launcher runs them::

    options = launch_options_from_args(args)
    report = launch(partial(run_item, settings), items, stage="single_model_evaluation",
                    location=settings.location, options=options,
                    outputs=lambda item: [item.output_dir])
    print(report.summary())
    return 0 if report.is_success else 1
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sim_consistency.errors import ConfigError
from sim_consistency.launch.local import run_local
from sim_consistency.launch.report import LaunchReport, update_failed_jobs
from sim_consistency.launch.slurm import require_sbatch, run_slurm
from sim_consistency.launch.slurm_config import SlurmConfig, load_slurm_config
from sim_consistency.project import ProjectLocation

__all__ = ["LaunchOptions", "launch", "launch_options_from_args", "failed_jobs_path"]


@dataclass(frozen=True)
class LaunchOptions:
    """How work runs: in this process, or as SLURM jobs with ``slurm`` resources."""

    launcher: Literal["local", "slurm"] = "local"
    slurm: SlurmConfig | None = None
    wait: bool = True
    progress: bool = True
    poll_s: float = 2.0
    num_threads: int | None = None  # --num_threads, re-applied inside each SLURM job

    def __post_init__(self) -> None:
        if self.launcher not in ("local", "slurm"):
            raise ConfigError(
                f"--launcher: unknown launcher {self.launcher!r}. Use local or slurm."
            )
        if self.launcher == "slurm" and self.slurm is None:
            raise ConfigError(
                "--launcher slurm needs --slurm_config (a configs/slurm/<name>.json file or "
                "its name, e.g. debug)."
            )
        if self.launcher == "local" and not self.wait:
            raise ConfigError("--no_wait only applies to --launcher slurm.")


def launch_options_from_args(args: argparse.Namespace | Any) -> LaunchOptions:
    """Build :class:`LaunchOptions` from the shared launch flags: parsed arguments, or a
    stage's settings (:class:`sim_consistency.runtime.Launcher`)."""
    slurm = None
    if args.launcher == "slurm" and args.slurm_config is not None:
        slurm = load_slurm_config(args.slurm_config)
        require_sbatch()  # fail before any planning work, not at submission
    return LaunchOptions(
        launcher=args.launcher,
        slurm=slurm,
        wait=not getattr(args, "no_wait", False),
        num_threads=getattr(args, "num_threads", None),
    )


def failed_jobs_path(location: ProjectLocation) -> Path:
    """Return ``<root>/logs/failed_jobs.tsv``."""
    return location.logs / "failed_jobs.tsv"


def _check_disjoint_outputs(
    items: Sequence[Any], labels: Sequence[str], outputs: Callable[[Any], Iterable[Path]]
) -> None:
    owner: dict[Path, str] = {}
    for item, label in zip(items, labels, strict=True):
        for path in outputs(item):
            path = Path(path).resolve()
            if path in owner:
                raise ConfigError(
                    f"{path}: written by two work items ({owner[path]!r} and {label!r}); "
                    "two jobs must never write the same file."
                )
            owner[path] = label


def launch(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    stage: str,
    location: ProjectLocation,
    options: LaunchOptions | None = None,
    label: Callable[[Any], str] = str,
    outputs: Callable[[Any], Iterable[Path]] | None = None,
) -> LaunchReport:
    """Run ``fn(item)`` for every item with the chosen launcher and return what happened.

    Args:
        fn: picklable function of one item (module-level, or a ``functools.partial``); it
            writes its outputs atomically and may return a small picklable result.
        items: picklable work items, one job each on SLURM.
        stage: the stage's name (job names, log folder, ``failed_jobs.tsv`` rows).
        location: project root; logs go to ``<root>/logs``.
        options: launcher, SLURM resources, wait or not (default: local).
        label: how an item is named in progress, logs and ``failed_jobs.tsv`` (unique).
        outputs: the files an item writes; when given, items that share a file are refused.

    Returns:
        A :class:`LaunchReport`; SLURM failures are also written to ``logs/failed_jobs.tsv``.

    Raises:
        ConfigError: duplicate labels, items sharing an output, no SLURM where one is asked.
    """
    options = options or LaunchOptions()
    items = list(items)
    labels = [label(item) for item in items]
    if len(set(labels)) != len(labels):
        duplicates = sorted({x for x in labels if labels.count(x) > 1})
        raise ConfigError(
            f"{stage}: work items share the label(s) {duplicates}; labels must be unique."
        )
    if outputs is not None:
        _check_disjoint_outputs(items, labels, outputs)
    report = LaunchReport(stage=stage, launcher=options.launcher)
    if not items:
        return report
    if options.launcher == "local":
        report.outcomes = run_local(fn, items, labels, stage=stage, progress=options.progress)
        return report
    assert options.slurm is not None  # LaunchOptions requires it with launcher "slurm"
    report.outcomes = run_slurm(
        fn,
        items,
        labels,
        stage=stage,
        config=options.slurm,
        project_root=location.root,
        logs=location.logs,
        wait=options.wait,
        progress=options.progress,
        poll_s=options.poll_s,
        num_threads=options.num_threads,
    )
    report.failed_jobs_file = failed_jobs_path(location)
    update_failed_jobs(report.failed_jobs_file, stage, report.outcomes)
    return report
