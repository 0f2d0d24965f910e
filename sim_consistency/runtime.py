"""The stage runtime: a stage is a settings dataclass and four functions; one driver runs them all.

A **stage** is

* a frozen, keyword-only settings dataclass. Its fields declared with :func:`option` are the
  stage's flags: the ``argparse`` parser (help, defaults shown, choices, ``nargs``) is
  generated from them. Shared flags come from reusable field groups — :class:`Models`
  (``--models_config``, ``--model_key``), :class:`Datasets`, :class:`Launcher`
  (``--launcher``, ``--slurm_config``, ``--no_wait``), :class:`Force`, :class:`Device`,
  :class:`Threads`, :class:`Wandb`; every stage has ``--project_root`` and ``-v``
  (:class:`StageSettings`). A stage inherits only the groups it uses. Fields without
  :func:`option` are derived values that :meth:`StageSettings.validated` fills in.
* ``plan(settings) -> list[item]``: the work items (small picklable dataclasses) whose outputs
  are missing or stale (:mod:`sim_consistency.outputs` decides); ``run(settings, item)``
  writes one item's outputs and returns the written paths; ``outputs(item)`` names them
  (items never share a file); ``label(item)`` names an item in progress lines and logs.
* a :class:`Stage` record tying these together with a one-line description and examples.

:func:`run_stage` is the driver every stage's ``main`` calls: parse → validate → plan → launch
(locally or as SLURM jobs, :mod:`sim_consistency.launch`) → summary (computed / reused /
failed, and where the outputs are), inside a ``--wandb`` run, with user errors printed as one
line and exit code 2, never a traceback (:func:`run_main`).

Keep the module that defines a stage's settings and :class:`Stage` cheap to import: torch,
timm, h5py and pandas are imported inside ``plan``/``run`` (or by the package modules they
call), so ``--help`` answers at once.

Writing a new stage::

    from dataclasses import dataclass
    from sim_consistency.runtime import Datasets, Force, Launcher, Stage, option, run_stage

    @dataclass(frozen=True, kw_only=True)
    class CountSettings(Datasets, Force, Launcher):
        split: str = option("dataset split to count", default="test")

    @dataclass(frozen=True)
    class Item:
        dataset: str
        output: Path

    def plan(settings: CountSettings) -> list[Item]:
        items = []
        for dataset in settings.datasets:
            output = settings.location.results / "counts" / f"{dataset_slug(dataset)}.json"
            key = json_digest({"dataset": dataset, "split": settings.split})
            if plan_reason(output, key, stored_key(output), force=settings.force):
                items.append(Item(dataset, output))
        return items

    def run(settings: CountSettings, item: Item) -> Path:
        ...  # write item.output atomically, with its content key; return it

    STAGE = Stage(
        name="count", settings=CountSettings, plan=plan, run=run,
        outputs=lambda item: [item.output], label=lambda item: item.dataset,
        description="Count the rows of every dataset split.",
        examples=("python scripts/count.py --datasets wds/digits",),
    )

    def main(argv: Sequence[str] | None = None) -> int:
        return run_stage(STAGE, argv)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sim_consistency.errors import SimcError, StageTerminated
from sim_consistency.io import sigterm_as_interrupt, write_errno, write_error
from sim_consistency.project import ProjectLocation

if TYPE_CHECKING:
    from sim_consistency.config import ModelSpec
    from sim_consistency.launch import LaunchOptions, LaunchReport
    from sim_consistency.tracking import Tracker

__all__ = [
    "EXIT_TERMINATED",
    "Datasets",
    "Device",
    "Force",
    "Launcher",
    "Models",
    "Option",
    "Stage",
    "StageSettings",
    "Threads",
    "Wandb",
    "add_settings_flags",
    "build_parser",
    "configure_logging",
    "error_message",
    "option",
    "run_main",
    "run_stage",
    "run_stage_group",
    "settings_from_namespace",
]

log = logging.getLogger("sim_consistency")

_OPTION = "sim_consistency.option"


# -- flags declared on settings fields --------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """How a settings field appears on the command line (see :func:`option`)."""

    help: str
    flag: str | None = None
    short: str | None = None
    choices: Sequence[Any] | None = None
    nargs: str | int | None = None
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    negatable: bool = False
    required: bool = False
    shown_default: str | None = None


def option(
    help: str,
    *,
    default: Any = MISSING,
    default_factory: Callable[[], Any] | Any = MISSING,
    flag: str | None = None,
    short: str | None = None,
    choices: Sequence[Any] | None = None,
    nargs: str | int | None = None,
    type: Callable[[str], Any] | None = None,  # noqa: A002 - argparse's name
    metavar: str | None = None,
    negatable: bool = False,
    required: bool = False,
    shown_default: str | None = None,
) -> Any:
    """Declare a settings field that is also a command-line flag.

    Args:
        help: the flag's help text (the default is appended unless it is None/False).
        default, default_factory: the dataclass default, also the flag's default. A field
            without one is a required flag.
        flag: the flag's name (default ``--<field name>``), e.g. ``--model_key`` for
            ``model_ids``.
        short: a short alias such as ``-v``.
        choices, nargs, type, metavar: as in ``argparse``; ``nargs`` values become tuples.
        negatable: a boolean with ``--x/--no-x`` (else a boolean is a ``store_true`` switch).
        required: required on the command line although the dataclass has a default (so
            that code and tests can build settings without it).
        shown_default: how ``--help`` shows a default computed at run time.
    """
    meta = Option(
        help=help,
        flag=flag,
        short=short,
        choices=choices,
        nargs=nargs,
        type=type,
        metavar=metavar,
        negatable=negatable,
        required=required,
        shown_default=shown_default,
    )
    return field(default=default, default_factory=default_factory, metadata={_OPTION: meta})


def _flag_fields(cls: type) -> list[tuple[dataclasses.Field, Option]]:
    return [(f, f.metadata[_OPTION]) for f in dataclasses.fields(cls) if _OPTION in f.metadata]


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value))
    return str(value)


# -- the shared field groups ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StageSettings:
    """Base of every stage's settings: the project root and ``-v``.

    Subclasses (field groups and stages) extend :meth:`validated`, calling ``super()`` first.
    """

    project_root: Path = option(
        "project root",
        default=None,
        shown_default="$SIMC_ROOT, else project_root in the checkout",
    )
    verbose: bool = option("debug logging", default=False, short="-v")

    @property
    def location(self) -> ProjectLocation:
        """The project's folder layout."""
        return ProjectLocation(self.project_root)

    def validated(self):
        """Return these settings checked and normalised (raises ConfigError naming the flag)."""
        return replace(self, project_root=ProjectLocation.resolve(self.project_root).root)


@dataclass(frozen=True, kw_only=True)
class Models(StageSettings):
    """``--models_config`` and ``--model_key``: which models of which config."""

    models_config: Path = option(
        "models config JSON (configs/models/*.json)", default=None, required=True
    )
    model_ids: tuple[str, ...] = option(
        "only these model ids", default=(), flag="--model_key", nargs="+", shown_default="all"
    )

    def load_specs(self) -> dict[str, ModelSpec]:
        """Return the models config's entries (paths relative to the project root)."""
        from sim_consistency.config import load_models_config

        return load_models_config(self.models_config, base_dir=self.project_root)

    def default_model_ids(self, specs: dict[str, ModelSpec]) -> list[str]:
        """The models used when ``--model_key`` is not given: every entry."""
        return list(specs)

    def validated(self):
        from sim_consistency.config import select_models

        s = super().validated()
        config = Path(s.models_config).resolve()
        s = replace(s, models_config=config)
        specs = s.load_specs()
        ids = select_models(specs, list(s.model_ids)) if s.model_ids else None
        return replace(s, model_ids=tuple(ids or s.default_model_ids(specs)))


@dataclass(frozen=True, kw_only=True)
class Datasets(StageSettings):
    """``--datasets``: dataset names or ``.txt`` lists of names."""

    datasets: tuple[str, ...] = option(
        "dataset names or .txt files with one name per line",
        default=("wds/digits",),
        nargs="+",
    )

    def validated(self):
        from sim_consistency.data import read_dataset_list

        s = super().validated()
        return replace(s, datasets=tuple(read_dataset_list(s.datasets)))


@dataclass(frozen=True, kw_only=True)
class Launcher(StageSettings):
    """``--launcher``, ``--slurm_config``, ``--no_wait``: where the work items run."""

    launcher: Literal["local", "slurm"] = option(
        "where work runs", default="local", choices=("local", "slurm")
    )
    slurm_config: str | None = option(
        "configs/slurm/<name>.json, or just <name> (with --launcher slurm)", default=None
    )
    no_wait: bool = option(
        "with --launcher slurm: submit and return; rerun the command to collect", default=False
    )

    def launch_options(self) -> LaunchOptions:
        """Return the launch options (the SLURM config is loaded and checked here)."""
        from sim_consistency.launch import launch_options_from_args

        return launch_options_from_args(self)


@dataclass(frozen=True, kw_only=True)
class Force(StageSettings):
    """``--force``: rebuild outputs even when their content key is current."""

    force: bool = option("recompute even up-to-date outputs", default=False)


@dataclass(frozen=True, kw_only=True)
class Device(StageSettings):
    """``--device``: where torch computes."""

    device: str = option("auto | cpu | cuda | cuda:N", default="auto")


@dataclass(frozen=True, kw_only=True)
class Threads(StageSettings):
    """``--num_threads``: torch's intra-op CPU threads (set by the driver before any work)."""

    num_threads: int | None = option(
        "torch intra-op CPU threads",
        default=None,
        type=int,
        shown_default="$SLURM_CPUS_PER_TASK, else the CPUs this process may use",
    )

    def validated(self):
        from sim_consistency.threads import resolve_num_threads

        s = super().validated()
        resolve_num_threads(s.num_threads)  # raises ConfigError naming the bad value
        return s


@dataclass(frozen=True, kw_only=True)
class Wandb(StageSettings):
    """``--wandb``: log the run's config, metrics and tables to Weights & Biases."""

    wandb: bool = option(
        "log to Weights & Biases (offline mode unless configured)", default=False, negatable=True
    )


# -- the stage record and the parser ----------------------------------------------------------


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


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def build_parser(
    settings_cls: type,
    *,
    description: str,
    examples: Sequence[str] = (),
    details: str = "",
    prog: str | None = None,
) -> argparse.ArgumentParser:
    """Generate the parser of a settings dataclass: one flag per :func:`option` field.

    The stage's own flags come first, the shared groups' after them; every default is shown.
    """
    parser = argparse.ArgumentParser(prog=prog, **_parser_text(description, examples, details))
    add_settings_flags(parser, settings_cls)
    return parser


def _parser_text(description: str, examples: Sequence[str], details: str) -> dict[str, Any]:
    return {
        "description": description + (f"\n\n{details}" if details else ""),
        "epilog": "Examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else None,
        "formatter_class": _HelpFormatter,
    }


def add_settings_flags(parser: argparse.ArgumentParser, settings_cls: type) -> None:
    """Add one flag per :func:`option` field of ``settings_cls`` to ``parser``."""
    shared_names = {
        f.name
        for base in settings_cls.__mro__[1:]
        if dataclasses.is_dataclass(base)
        for f in dataclasses.fields(base)
    }
    own = parser.add_argument_group("options of this stage")
    shared = parser.add_argument_group("shared options")
    fields = _flag_fields(settings_cls)
    for f, opt in fields:
        if f.name not in shared_names:
            _add_flag(own, f, opt)
    order = {name: i for i, name in enumerate(_SHARED_ORDER)}
    for f, opt in sorted(fields, key=lambda fo: order.get(fo[0].name, len(order))):
        if f.name in shared_names:
            _add_flag(shared, f, opt)


#: The order of the shared flags in ``--help``.
_SHARED_ORDER = (
    "project_root",
    "models_config",
    "model_ids",
    "datasets",
    "launcher",
    "slurm_config",
    "no_wait",
    "force",
    "device",
    "num_threads",
    "wandb",
    "verbose",
)


def _add_flag(group: Any, f: dataclasses.Field, opt: Option) -> None:
    names = [opt.flag or f"--{f.name}"] + ([opt.short] if opt.short else [])
    default = f.default_factory() if f.default_factory is not MISSING else f.default
    required = opt.required or default is MISSING
    help_text = opt.help
    if opt.shown_default is not None:
        help_text += f" (default: {opt.shown_default})"
    elif not required and default not in (None, False) and not isinstance(default, bool):
        help_text += f" (default: {_shown(default)})"
    elif isinstance(default, bool) and default and opt.negatable:
        help_text += " (default: on)"
    kwargs: dict[str, Any] = {"dest": f.name, "help": help_text}
    if not required:
        kwargs["default"] = default
    else:
        kwargs["required"] = True
    if isinstance(default, bool):
        kwargs["action"] = argparse.BooleanOptionalAction if opt.negatable else "store_true"
        group.add_argument(*names, **kwargs)
        return
    for name in ("choices", "nargs", "type"):
        if getattr(opt, name) is not None:
            kwargs[name] = getattr(opt, name)
    if opt.choices is None:
        kwargs["metavar"] = opt.metavar or names[0].lstrip("-").upper()
    group.add_argument(*names, **kwargs)


def settings_from_namespace(settings_cls: type, args: argparse.Namespace) -> Any:
    """Build (unvalidated) settings from parsed flags; list values become tuples."""
    values = {}
    for f, opt in _flag_fields(settings_cls):
        value = getattr(args, f.name)
        if opt.nargs is not None and isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return settings_cls(**values)


# -- the driver -------------------------------------------------------------------------------


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
        prog=prog, description=description, formatter_class=_HelpFormatter
    )
    commands = parser.add_subparsers(dest="_command", required=True, metavar="COMMAND")
    for name, stage in stages.items():
        sub = commands.add_parser(
            name,
            help=stage.description,
            **_parser_text(stage.description, stage.examples, stage.details),
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
    from functools import partial

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


# -- logging and the error boundary -----------------------------------------------------------


def configure_logging(verbose: bool = False) -> None:
    """Send the package's log records to stderr, once."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
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
