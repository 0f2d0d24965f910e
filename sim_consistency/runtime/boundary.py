"""The error boundary of a stage's ``main`` and its logging set-up."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable

from sim_consistency.errors import SimcError, StageTerminated
from sim_consistency.io import sigterm_as_interrupt, write_errno, write_error

__all__ = ["EXIT_TERMINATED", "configure_logging", "error_message", "run_main"]

log = logging.getLogger("sim_consistency")


def configure_logging(verbose: bool = False) -> None:
    """Send the package's log records to stderr, once."""
    if not log.handlers:
        from sim_consistency.progress import log_handler

        handler = log_handler(sys.stderr)  # bar-safe: records never glue onto a live bar
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)


#: Exit code of a stage ended by SIGTERM (128 + 15, what shells and SLURM report).
EXIT_TERMINATED = 143

_WORKER_WRAPPED = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.")


def error_message(exc: BaseException) -> str:
    """Return the one-line message of a user-facing error, as in-process code raised it.

    A DataLoader worker's exception reaches the main process re-raised with the worker's
    traceback in its text (``Caught DataError in DataLoader worker process 0. Original
    Traceback …``); the last line of that traceback is the original message, which is what the
    user gets, the same as with ``--num_workers 0``.
    """
    text = str(exc)
    if _WORKER_WRAPPED.match(text):
        name = type(exc).__name__
        for line in reversed(text.strip().splitlines()):
            head, sep, rest = line.partition(": ")
            if sep and head.rsplit(".", 1)[-1] == name:
                return rest
    return text


def run_main(body: Callable[[], int]) -> int:
    """Run a stage body; turn the ways it can end into one line on stderr and an exit code.

    A :class:`SimcError` (worker-side ones included) prints its message without a traceback
    and returns 2; so does a write the file system refused (full disk, read-only, permission),
    named with the path and the free space. SIGTERM is handled like Ctrl-C — partial outputs
    removed — and returns 143 (Ctrl-C: 130).
    """
    try:
        with sigterm_as_interrupt() as sigterm:
            try:
                return body()
            except Exception as exc:
                if sigterm.received:  # e.g. a DataLoader worker killed by the same SIGTERM
                    raise StageTerminated(str(exc)) from exc
                raise
    except SimcError as exc:
        print(f"error: {error_message(exc)}", file=sys.stderr)
        return 2
    except StageTerminated:
        print("terminated (SIGTERM): partial outputs removed; rerun to resume", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if write_errno(exc) is None:
            raise
        where = exc.filename or "(unknown path)"
        print(f"error: {write_error(where, exc)}", file=sys.stderr)
        return 2
