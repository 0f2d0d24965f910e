"""Settings fields that are flags (:func:`option`) and the parser generated from them."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field
from typing import Any

__all__ = ["Option", "add_settings_flags", "build_parser", "option", "settings_from_namespace"]

_OPTION = "sim_consistency.option"


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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Raw description and epilog (examples keep their lines), wider option column."""

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
    parser = argparse.ArgumentParser(prog=prog, **parser_text(description, examples, details))
    add_settings_flags(parser, settings_cls)
    return parser


def parser_text(description: str, examples: Sequence[str], details: str) -> dict[str, Any]:
    """Return the description/epilog/formatter keywords of a stage's parser."""
    return {
        "description": description + (f"\n\n{details}" if details else ""),
        "epilog": "Examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else None,
        "formatter_class": HelpFormatter,
    }


def add_settings_flags(parser: argparse.ArgumentParser, settings_cls: type) -> None:
    """Add one flag per :func:`option` field of ``settings_cls`` to ``parser``."""
    shared_names = {  # the runtime's field groups; a stage family's own groups stay "own"
        f.name
        for base in settings_cls.__mro__[1:]
        if dataclasses.is_dataclass(base) and base.__module__ == _GROUPS_MODULE
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


_GROUPS_MODULE = "sim_consistency.runtime.groups"

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
    "profile",
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
    elif not required and default is not None and not isinstance(default, bool) and default != ():
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
