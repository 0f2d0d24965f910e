"""Flags shared by every stage script, defined once, the planned-and-tracked launch most stages
run, and the error boundary of ``main``."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sim_consistency.errors import SimcError, StageTerminated
from sim_consistency.io import sigterm_as_interrupt, write_errno, write_error
from sim_consistency.launch import LaunchReport, launch, launch_options_from_args
from sim_consistency.progress import log_handler
from sim_consistency.threads import set_torch_threads
from sim_consistency.tracking import Tracker, start_tracking

__all__ = [
    "add_common_arguments",
    "configure_logging",
    "error_message",
    "launch_planned",
    "parse_stage_args",
    "run_main",
]

log = logging.getLogger("sim_consistency")


def add_common_arguments(parser: argparse.ArgumentParser, *, needs_models: bool = True) -> None:
    """Add the flags every stage shares (DESIGN.md, "Staged scripts")."""
    parser.add_argument(
        "--project_root",
        default=None,
        help="project root (default: $SIMC_ROOT, else project_root in the checkout)",
    )
    if needs_models:
        parser.add_argument(
            "--models_config", required=True, help="models config JSON (configs/models/*.json)"
        )
        parser.add_argument(
            "--model_key", nargs="+", default=None, help="only these model ids (default: all)"
        )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["wds/digits"],
        help="dataset names or .txt files with one name per line (default: wds/digits)",
    )
    parser.add_argument(
        "--launcher", choices=["local", "slurm"], default="local", help="where work runs"
    )
    parser.add_argument(
        "--slurm_config",
        default=None,
        help="configs/slurm/<name>.json, or just <name> (with --launcher slurm)",
    )
    parser.add_argument(
        "--no_wait",
        action="store_true",
        help="with --launcher slurm: submit and return; rerun the command to collect",
    )
    parser.add_argument("--force", action="store_true", help="recompute even up-to-date outputs")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--num_threads",
        type=int,
        default=None,
        help="torch intra-op CPU threads (default: $SLURM_CPUS_PER_TASK, else the CPUs this "
        "process may use)",
    )
    parser.add_argument(
        "--wandb",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="log to Weights & Biases (offline mode unless configured)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def parse_stage_args(
    doc: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    argv: Sequence[str] | None = None,
    *,
    needs_models: bool = True,
) -> argparse.Namespace:
    """Parse a stage's flags (the shared ones + ``add_arguments``'s), set up logging and threads.

    torch's intra-op thread count is set here for every stage (:mod:`sim_consistency.threads`:
    ``--num_threads``, else ``$SLURM_CPUS_PER_TASK``, else the process's CPU affinity).

    ``doc`` is the stage module's docstring: its first paragraph is the ``--help`` description.
    """
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser, needs_models=needs_models)
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        set_torch_threads(args.num_threads)
    except SimcError as exc:
        parser.error(str(exc))
    return args


def launch_planned(
    args: argparse.Namespace,
    settings: Any,
    *,
    stage: str,
    plan: Callable[[Any], list[Any]],
    run_item: Callable[[Any], Any],
    label: Callable[[Any], str],
    outputs: Callable[[Any], list[Path]],
    log_results: Callable[[Tracker, list[Any], LaunchReport], None],
) -> tuple[list[Any], LaunchReport]:
    """Plan a stage's work items, launch them inside its ``--wandb`` run; return both.

    The launch flags are validated before anything is planned; ``settings`` (a dataclass with
    ``location``) is the run's config, and ``log_results(tracker, items, report)`` logs the
    stage's metrics and tables. Returns the planned items and the launch's report.
    """
    options = launch_options_from_args(args)
    with start_tracking(
        args.wandb, stage=stage, config=asdict(settings), location=settings.location
    ) as tracker:
        items = plan(settings)
        report = launch(
            run_item,
            items,
            stage=stage,
            location=settings.location,
            options=options,
            label=label,
            outputs=outputs,
        )
        log_results(tracker, items, report)
    return items, report


def configure_logging(verbose: bool = False) -> None:
    """Send the package's log records to stderr, once."""
    if not log.handlers:
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
