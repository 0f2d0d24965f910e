"""Run work items as SLURM jobs through submitit: one array task per item.

Jobs write their logs (and submitit's pickles) under ``<root>/logs/slurm/<stage>/``. The
submitting process either waits, showing how many jobs are pending, running, done and failed,
or returns at once (``wait=False``). A failed job never stops the others; its error is
collected into the launch report.

Two launches never run the same work item at once: every submitted job is recorded in
``logs/slurm/<stage>/submitted.tsv`` and an item whose earlier job is still queued or running
(per ``squeue``) is not submitted again. Jobs run with ``HDF5_USE_FILE_LOCKING=FALSE`` since
cluster file systems often do not support HDF5's locks.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sim_consistency.errors import ConfigError
from sim_consistency.io import atomic_write_text, sigterm_as_interrupt
from sim_consistency.launch.report import JobOutcome, error_tail
from sim_consistency.launch.slurm_config import SlurmConfig
from sim_consistency.progress import progress_bar

__all__ = [
    "JOB_ENVIRONMENT",
    "JobCall",
    "active_job_ids",
    "make_executor",
    "require_sbatch",
    "run_slurm",
]

#: Environment every job runs with (set in the sbatch script and again in the job's Python).
JOB_ENVIRONMENT = {"HDF5_USE_FILE_LOCKING": "FALSE"}

_RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT"}


class JobCall:
    """The picklable callable a job runs: set the job environment and torch's threads, then
    ``fn(item)`` with SIGTERM handled like Ctrl-C (partial outputs removed); threads:
    ``num_threads`` if given, else the job's ``SLURM_CPUS_PER_TASK``."""

    def __init__(self, fn: Callable[[Any], Any], num_threads: int | None = None) -> None:
        self.fn = fn
        self.num_threads = num_threads

    def __call__(self, item: Any) -> Any:
        from sim_consistency.threads import set_torch_threads

        os.environ.update(JOB_ENVIRONMENT)
        set_torch_threads(getattr(self, "num_threads", None))
        with sigterm_as_interrupt():  # scancel / time limit: partial outputs removed
            return self.fn(item)


def require_sbatch() -> None:
    """Raise a :class:`ConfigError` unless SLURM's ``sbatch`` is on ``PATH``."""
    if shutil.which("sbatch") is None:
        raise ConfigError(
            "--launcher slurm: 'sbatch' is not on PATH; run from a SLURM login node "
            "(or start the local test cluster with .ci/slurm_up.sh), or use --launcher local."
        )


def make_executor(config: SlurmConfig, folder: Path, *, project_root: Path, job_name: str):
    """Return a ``submitit.SlurmExecutor`` with the config's resources (and container)."""
    import submitit

    require_sbatch()
    python = config.container.python_command(project_root) if config.container else None
    executor = submitit.SlurmExecutor(folder=folder, python=python)
    params: dict[str, Any] = {
        "job_name": job_name,
        "cpus_per_task": config.cpus_per_task,
        "mem": f"{int(config.mem_gb * 1024)}M",
        "time": config.timeout_min,
        "array_parallelism": config.array_parallelism,
        "setup": [f"export {k}={v}" for k, v in JOB_ENVIRONMENT.items()] + list(config.setup),
    }
    if config.partition:
        params["partition"] = config.partition
    if config.gpus_per_node:
        params["gpus_per_node"] = config.gpus_per_node
    if config.constraint:
        params["constraint"] = config.constraint
    if config.sbatch:
        params["additional_parameters"] = dict(config.sbatch)
    executor.update_parameters(**params)
    return executor


def active_job_ids() -> set[str]:
    """Return the ids of this user's queued or running jobs (array tasks as ``<id>_<task>``)."""
    done = subprocess.run(
        ["squeue", "-h", "-r", "--me", "-o", "%i"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ConfigError(f"squeue failed ({done.stderr.strip()}); is the SLURM cluster up?")
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


def _read_submitted(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _write_submitted(path: Path, rows: list[dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=["job_id", "work_item"], delimiter="\t", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _outcome(job, label: str) -> JobOutcome:
    """Collect a finished job: its result, or the last lines of its error."""
    log = str(job.paths.stderr)
    exception = job.exception()
    if exception is None:
        return JobOutcome(label, job.job_id, "done", result=job.result(), log=log)
    return JobOutcome(label, job.job_id, "failed", error=error_tail(str(exception)), log=log)


def _wait(jobs: list, labels: list[str], *, stage: str, progress: bool, poll_s: float):
    outcomes: dict[int, JobOutcome] = {}
    bar = progress_bar(total=len(jobs), desc=f"{stage} (slurm)", unit="job", disable=not progress)
    while len(outcomes) < len(jobs):
        running = 0
        for index, job in enumerate(jobs):
            if index in outcomes:
                continue
            if job.done():
                outcomes[index] = _outcome(job, labels[index])
                bar.update()
            elif job.state in _RUNNING_STATES:
                running += 1
        failed = sum(o.state == "failed" for o in outcomes.values())
        bar.set_postfix(
            pending=len(jobs) - len(outcomes) - running,
            running=running,
            done=len(outcomes) - failed,
            failed=failed,
        )
        if len(outcomes) < len(jobs):
            time.sleep(poll_s)
    bar.close()
    return [outcomes[i] for i in range(len(jobs))]


def _submit(executor, call: JobCall, items: list[Any], config: SlurmConfig) -> list:
    """Submit ``items`` as one job array; an ``sbatch`` refusal becomes a ConfigError."""
    import submitit

    if not items:
        return []
    try:
        return executor.map_array(call, items)
    except submitit.core.utils.FailedJobError as exc:
        reason = " ".join(str(exc).split())
        raise ConfigError(
            f"{config.source}: sbatch refused the jobs ({reason}). Check the partition, "
            "account, constraint and resources against `sinfo` / your site's limits."
        ) from exc


def run_slurm(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    labels: Sequence[str],
    *,
    stage: str,
    config: SlurmConfig,
    project_root: Path,
    logs: Path,
    wait: bool = True,
    progress: bool = True,
    poll_s: float = 2.0,
    num_threads: int | None = None,
) -> list[JobOutcome]:
    """Submit one array task per item (skipping items whose earlier job still runs).

    Returns one outcome per item: ``done``/``failed`` when waited for, ``submitted`` with
    ``wait=False``, ``skipped_running`` for an item another launch's job is still working on.
    """
    folder = logs / "slurm" / stage
    registry = folder / "submitted.tsv"
    executor = make_executor(config, folder / "%j", project_root=project_root, job_name=stage)
    active = active_job_ids()
    in_flight = {
        row["work_item"]: row["job_id"]
        for row in _read_submitted(registry)
        if row["job_id"] in active
    }
    outcomes: list[JobOutcome | None] = []
    to_submit: list[int] = []
    for index, label in enumerate(labels):
        if label in in_flight:
            outcomes.append(JobOutcome(label, in_flight[label], "skipped_running"))
        else:
            outcomes.append(None)
            to_submit.append(index)
    jobs = _submit(executor, JobCall(fn, num_threads), [items[i] for i in to_submit], config)
    _write_submitted(
        registry,
        [{"job_id": j, "work_item": w} for w, j in in_flight.items()]
        + [
            {"job_id": job.job_id, "work_item": labels[i]}
            for job, i in zip(jobs, to_submit, strict=True)
        ],
    )
    if wait:
        finished = _wait(
            jobs, [labels[i] for i in to_submit], stage=stage, progress=progress, poll_s=poll_s
        )
    else:
        finished = [
            JobOutcome(labels[i], job.job_id, "submitted", log=str(job.paths.stderr))
            for job, i in zip(jobs, to_submit, strict=True)
        ]
    for index, outcome in zip(to_submit, finished, strict=True):
        outcomes[index] = outcome
    return [o for o in outcomes if o is not None]
