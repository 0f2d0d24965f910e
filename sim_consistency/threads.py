"""How many intra-op CPU threads torch uses in a stage, and how that number was chosen.

torch's default is one thread per *physical core of the machine*, whatever share of it the
process may use: on a shared node, in a container, or in a SLURM job with ``--cpus-per-task``,
that oversubscribes the CPUs the process actually has and the threads wait for each other
(``benchmarks/threads.py``: several times slower than the right count). Every stage therefore
sets the count once, from the first of

1. ``--num_threads N`` (a stage flag),
2. ``SLURM_CPUS_PER_TASK`` (set by SLURM inside a job),
3. the CPUs the process may run on (``os.sched_getaffinity``; ``os.cpu_count()`` where the
   platform has no affinity),

and records the count and its source in its outputs' metadata (:func:`threads_metadata`).
torch's thread count is process state; this module remembers how it was last chosen so that
the record says why, not only what.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from sim_consistency.errors import ConfigError

__all__ = [
    "SLURM_CPUS_ENV",
    "ThreadSetting",
    "available_cpus",
    "resolve_num_threads",
    "set_torch_threads",
    "threads_metadata",
]

log = logging.getLogger("sim_consistency.threads")

SLURM_CPUS_ENV = "SLURM_CPUS_PER_TASK"
Source = Literal["--num_threads", "SLURM_CPUS_PER_TASK", "cpu_affinity"]


@dataclass(frozen=True)
class ThreadSetting:
    """A thread count and where it came from."""

    n_threads: int
    source: Source


_applied: ThreadSetting | None = None


def available_cpus() -> int:
    """Return how many CPUs this process may run on (its affinity mask, else ``cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS / Windows: no affinity API
        return max(1, os.cpu_count() or 1)


def resolve_num_threads(
    num_threads: int | None = None, environ: Mapping[str, str] | None = None
) -> ThreadSetting:
    """Return the thread count: ``num_threads``, else ``$SLURM_CPUS_PER_TASK``, else affinity.

    Raises:
        ConfigError: ``num_threads`` < 1, or ``SLURM_CPUS_PER_TASK`` is not a positive integer.
    """
    environ = os.environ if environ is None else environ
    if num_threads is not None:
        if int(num_threads) < 1:
            raise ConfigError(f"--num_threads must be a positive integer (got {num_threads}).")
        return ThreadSetting(int(num_threads), "--num_threads")
    slurm = environ.get(SLURM_CPUS_ENV, "").strip()
    if slurm:
        if not slurm.isdigit() or int(slurm) < 1:
            raise ConfigError(
                f"${SLURM_CPUS_ENV}: not a positive integer (got {slurm!r}); unset it or pass "
                "--num_threads N."
            )
        return ThreadSetting(int(slurm), "SLURM_CPUS_PER_TASK")
    return ThreadSetting(available_cpus(), "cpu_affinity")


def set_torch_threads(num_threads: int | None = None) -> ThreadSetting:
    """Set torch's intra-op thread count by :func:`resolve_num_threads`'s rule; return it."""
    global _applied
    import torch

    setting = resolve_num_threads(num_threads)
    if torch.get_num_threads() != setting.n_threads:
        torch.set_num_threads(setting.n_threads)
    _applied = setting
    log.debug("torch intra-op threads: %d (%s)", setting.n_threads, setting.source)
    return setting


def threads_metadata() -> dict[str, int | str]:
    """Return ``{"torch_num_threads", "num_threads_source"}`` for an output's metadata.

    The count is torch's current one; the source is that of the last :func:`set_torch_threads`
    call, or ``"torch default"`` when no stage set it (a library call from a notebook).
    """
    import torch

    n = torch.get_num_threads()
    source = _applied.source if _applied is not None and _applied.n_threads == n else None
    return {"torch_num_threads": n, "num_threads_source": source or "torch default"}
