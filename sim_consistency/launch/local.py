"""Run work items one after the other in this process (the default launcher).

In-process work stops at the first error, which propagates with its own message (a stage's
``main`` prints a :class:`~sim_consistency.errors.SimcError` and returns 2): there is no job to
keep alive and the user is looking at the terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sim_consistency.launch.report import JobOutcome
from sim_consistency.progress import progress_bar

__all__ = ["run_local"]


def run_local(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    labels: Sequence[str],
    *,
    stage: str,
    progress: bool = True,
) -> list[JobOutcome]:
    """Call ``fn(item)`` for every item in order; return one ``done`` outcome each."""
    outcomes = []
    bar = progress_bar(
        total=len(items), desc=stage, unit="item", disable=not progress or len(items) < 2
    )
    for item, label in zip(items, labels, strict=True):
        bar.set_postfix_str(label)
        outcomes.append(JobOutcome(work_item=label, job_id="local", state="done", result=fn(item)))
        bar.update()
    bar.close()
    return outcomes
