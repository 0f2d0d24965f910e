"""The stage record and the one driver that runs every stage."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim_consistency.runtime.boundary import configure_logging, run_main
from sim_consistency.runtime.flags import (
    HelpFormatter,
    add_settings_flags,
    build_parser,
    parser_text,
    settings_from_namespace,
)
from sim_consistency.runtime.groups import Launcher, StageSettings, Threads

if TYPE_CHECKING:
    from sim_consistency.launch import LaunchReport
    from sim_consistency.tracking import Tracker

__all__ = ["Stage", "run_stage", "run_stage_group"]


@dataclass(frozen=True)
class Stage:
    """A stage: its settings class, its work functions, and how it presents itself.

    Attributes:
        name: the stage's name (job names, logs, wandb job type, summary lines).
        settings: the frozen settings dataclass (flags from its :func:`option` fields).
        description: one line for ``--help``.
        examples: command lines shown in ``--help``'s "Examples" section.
        plan: ``plan(settings) -> list[item]``, the items to (re)build.
        run: ``run(settings, item)``, writes one item; returns the written path(s).
        outputs: ``outputs(item) -> paths`` the item writes.
        label: a unique, readable name of an item.
        output_root: where the outputs live (the summary line names it).
        intercept: called with the validated settings before planning; a returned exit code
            ends the run there (dry runs such as ``--list_blocks``).
        track: logs stage-specific metrics/tables into the ``--wandb`` run.
        finish: called after the launch (extra lines of the summary, follow-up files).
        details: a longer description printed under the one-liner in ``--help``.
    """

    name: str
    settings: type[StageSettings]
    description: str
    plan: Callable[[Any], list[Any]]
    run: Callable[[Any, Any], Any]
    outputs: Callable[[Any], Sequence[Path]]
    label: Callable[[Any], str] = str
    examples: Sequence[str] = ()
    output_root: Callable[[Any], Path] | None = None
    intercept: Callable[[Any], int | None] | None = None
    track: Callable[[Tracker, Any, list[Any], LaunchReport], None] | None = None
    finish: Callable[[Any, list[Any], LaunchReport], None] | None = None
    details: str = ""

    def parser(self, prog: str | None = None) -> argparse.ArgumentParser:
        """Return the stage's generated ``argparse`` parser."""
        return build_parser(
            self.settings,
            description=self.description,
            examples=self.examples,
            details=self.details,
            prog=prog,
        )

    def parse(self, argv: Sequence[str] | None = None) -> Any:
        """Parse ``argv`` into validated settings (no logging, threads or work)."""
        return settings_from_namespace(self.settings, self.parser().parse_args(argv)).validated()


def run_stage(stage: Stage, argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run a stage from its command line; return the exit code.

    Parse (bad flags: argparse's usage message, exit 2) → validate (a ConfigError: one line,
    exit 2) → set torch's threads → ``intercept`` → plan → launch inside the ``--wandb`` run →
    print the launch report and the summary line. Exit 0 when every item succeeded, else 1.
    """
    args = stage.parser(prog).parse_args(argv)
    configure_logging(bool(getattr(args, "verbose", False)))
    return run_main(lambda: _drive(stage, settings_from_namespace(stage.settings, args)))


def run_stage_group(
    stages: Mapping[str, Stage],
    argv: Sequence[str] | None = None,
    *,
    description: str,
    prog: str | None = None,
) -> int:
    """Run one of several stages chosen by a sub-command (``import_rep2rep.py features …``).

    Each sub-command's flags are generated from its stage's settings, as in :func:`run_stage`.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=HelpFormatter
    )
    commands = parser.add_subparsers(dest="_command", required=True, metavar="COMMAND")
    for name, stage in stages.items():
        sub = commands.add_parser(
            name,
            help=stage.description,
            **parser_text(stage.description, stage.examples, stage.details),
        )
        add_settings_flags(sub, stage.settings)
    args = parser.parse_args(argv)
    stage = stages[args._command]
    configure_logging(bool(getattr(args, "verbose", False)))
    return run_main(lambda: _drive(stage, settings_from_namespace(stage.settings, args)))


def _drive(stage: Stage, raw: Any) -> int:
    from sim_consistency.launch import launch
    from sim_consistency.outputs import count_reused
    from sim_consistency.tracking import start_tracking

    settings = raw.validated()
    if isinstance(settings, Threads):
        from sim_consistency.threads import set_torch_threads

        set_torch_threads(settings.num_threads)
    if stage.intercept is not None:
        code = stage.intercept(settings)
        if code is not None:
            return code
    options = settings.launch_options() if isinstance(settings, Launcher) else None

    with (
        start_tracking(
            bool(getattr(settings, "wandb", False)),
            stage=stage.name,
            config=dataclasses.asdict(settings),
            location=settings.location,
        ) as tracker,
        count_reused() as reused,
    ):
        items = stage.plan(settings)
        report = launch(
            partial(stage.run, settings),
            items,
            stage=stage.name,
            location=settings.location,
            options=options,
            label=stage.label,
            outputs=stage.outputs,
        )
        written = [p for result in report.results() for p in _paths(result)]
        tracker.log_metrics(
            {
                "n_items": len(items),
                "n_computed": len(written),
                "n_reused": len(reused),
                "n_failed": report.n_failed,
            }
        )
        tracker.log_table(
            "outputs",
            [
                {"item": stage.label(i), "outputs": ";".join(map(str, stage.outputs(i)))}
                for i in items
            ],
        )
        if stage.track is not None:
            stage.track(tracker, settings, items, report)
    print(report.summary())
    if stage.finish is not None:
        stage.finish(settings, items, report)
    where = stage.output_root(settings) if stage.output_root else settings.location.root
    print(
        f"{stage.name}: {len(written)} output(s) computed, {len(reused)} reused (up to date), "
        f"{report.n_failed} item(s) failed; outputs under {where}"
    )
    return 0 if report.is_success else 1


def _paths(result: Any) -> list[Any]:
    if result is None:
        return []
    if isinstance(result, (list, tuple)):
        return list(result)
    return [result]
