"""What a launch did: one :class:`JobOutcome` per work item, and ``logs/failed_jobs.tsv``.

``<root>/logs/failed_jobs.tsv`` lists the work items whose job failed, one row each: stage, job
id, work item, the error's last lines and the job's log file. Every launch of a stage replaces
that stage's rows for the items it ran (a rerun that succeeds clears them) and keeps the other
stages' rows, so one file answers "what is still broken?" for the whole project.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sim_consistency.io import atomic_write_text

__all__ = [
    "FAILED_JOBS_COLUMNS",
    "JobOutcome",
    "LaunchReport",
    "error_tail",
    "read_failed_jobs",
    "update_failed_jobs",
]

FAILED_JOBS_COLUMNS = ("stage", "job_id", "work_item", "error", "log")

JobState = Literal["done", "failed", "submitted", "skipped_running"]


@dataclass
class JobOutcome:
    """The fate of one work item: its job id (``local`` in-process), state, result or error."""

    work_item: str
    job_id: str
    state: JobState
    result: Any = None
    error: str = ""
    log: str = ""


@dataclass
class LaunchReport:
    """Every work item of one launch, in submission order."""

    stage: str
    launcher: str
    outcomes: list[JobOutcome] = field(default_factory=list)
    failed_jobs_file: Path | None = None

    def _count(self, state: JobState) -> int:
        return sum(o.state == state for o in self.outcomes)

    @property
    def n_done(self) -> int:
        return self._count("done")

    @property
    def n_failed(self) -> int:
        return self._count("failed")

    @property
    def n_submitted(self) -> int:
        """Jobs submitted and not waited for (``--no_wait``)."""
        return self._count("submitted")

    @property
    def is_success(self) -> bool:
        """True when no work item failed."""
        return self.n_failed == 0

    def results(self) -> list[Any]:
        """Return the results of the finished work items, in submission order."""
        return [o.result for o in self.outcomes if o.state == "done"]

    def summary(self) -> str:
        """Return a one-paragraph account for the terminal."""
        if not self.outcomes:
            return f"{self.stage}: nothing to do (every output is up to date)."
        parts = [f"{self.n_done} done", f"{self.n_failed} failed"]
        if self.n_submitted:
            parts.append(f"{self.n_submitted} submitted (not waited for)")
        running = self._count("skipped_running")
        if running:
            parts.append(f"{running} still running from an earlier launch (not resubmitted)")
        text = f"{self.stage} ({self.launcher}): {len(self.outcomes)} job(s): {', '.join(parts)}."
        if self.n_submitted:
            ids = ", ".join(o.job_id for o in self.outcomes if o.state == "submitted")
            text += f"\n  job ids: {ids}; rerun the same command later to collect what is missing."
        for outcome in self.outcomes:
            if outcome.state == "failed":
                last = outcome.error.splitlines()[-1] if outcome.error else "unknown error"
                text += f"\n  FAILED {outcome.work_item} (job {outcome.job_id}): {last}"
        if self.n_failed and self.failed_jobs_file is not None:
            text += f"\n  details: {self.failed_jobs_file}"
        return text


def error_tail(text: str, n_lines: int = 3) -> str:
    """Return the last ``n_lines`` non-empty lines of an error message or traceback.

    submitit wraps a job's traceback between dashed lines followed by log paths; the traceback
    is what tells the user what went wrong, so that part is used when present.
    """
    sections = text.split("-" * 22 + "\n")
    body = sections[1] if len(sections) >= 3 else text
    lines = [line.rstrip() for line in body.splitlines() if line.strip()]
    return "\n".join(lines[-n_lines:])


def read_failed_jobs(path: Path) -> list[dict[str, str]]:
    """Return the rows of a ``failed_jobs.tsv`` (empty when the file does not exist)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def update_failed_jobs(path: Path, stage: str, outcomes: Iterable[JobOutcome]) -> None:
    """Replace ``stage``'s rows for the items in ``outcomes`` by their failures (atomically)."""
    outcomes = list(outcomes)
    ran = {o.work_item for o in outcomes if o.state in ("done", "failed")}
    kept = [
        row
        for row in read_failed_jobs(path)
        if not (row["stage"] == stage and row["work_item"] in ran)
    ]
    new = [
        {
            "stage": stage,
            "job_id": o.job_id,
            "work_item": o.work_item,
            # One row per failure: newlines of the error become " | ".
            "error": " | ".join(o.error.splitlines()),
            "log": o.log,
        }
        for o in outcomes
        if o.state == "failed"
    ]
    rows = kept + new
    if not rows and not path.exists():
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=FAILED_JOBS_COLUMNS, delimiter="\t", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
