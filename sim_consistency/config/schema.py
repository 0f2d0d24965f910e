"""The one constraint table behind every config: a :class:`Key` per allowed key.

Each config (models entries, variant methods, similarity metrics, SLURM resources) declares its
keys as :class:`Key` objects — type, allowed values, default, meaning — and validates a raw JSON
object with :func:`check_keys`, which appends one line per problem (unknown key with a
"did you mean", missing key, wrong value) to a list, so the loader can report every problem of a
file at once. Messages name the entry, the key, the value and what is allowed::

    'soup' variant: keep must be a number in (0, 1] (got 'lots').
    'soup' variant: unknown rank_rule 'magic'; did you mean 'vetterli'? Valid: variance, …

The same tables generate the README's schema tables (:func:`markdown_table`). Pure Python: no
pydantic (its import costs more than a config load) and no torch.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Key",
    "boolean",
    "check_keys",
    "choice",
    "did_you_mean",
    "entry_id",
    "entry_ids",
    "integer",
    "json_object",
    "markdown_table",
    "number",
    "numbers",
    "split_ref",
    "string",
    "strings",
]


def did_you_mean(name: str, choices: Any) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` (ignoring case), else ``"."``."""
    by_lower = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1)
    return f"; did you mean '{by_lower[close[0]]}'?" if close else "."


@dataclass(frozen=True)
class Key:
    """One allowed key of a config object.

    Attributes:
        name: the JSON key.
        kind: its type, for the docs (``number``, ``integer``, ``entry id``, …).
        allowed: what a valid value is, completing "``name`` must be …" in messages.
        check: ``value -> bool``; ``None`` (JSON null) is handled by ``nullable``.
        default: the value used when the key is absent (``None``: no value / computed).
        required: the key must be present.
        choices: the valid values of a choice key (reported with a "did you mean").
        nullable: JSON null is accepted and means the default.
        doc: one line saying what the key does.
    """

    name: str
    kind: str
    allowed: str
    check: Callable[[Any], bool]
    default: Any = None
    required: bool = False
    choices: tuple[Any, ...] = ()
    nullable: bool = False
    doc: str = ""

    def problem(self, where: str, value: Any, prefix: str = "") -> str | None:
        """The message for ``value`` if it is not valid, else ``None``.

        ``prefix`` is the key's path inside the entry (``"variant."``), shown before its name.
        """
        name = prefix + self.name
        if value is None and self.nullable:
            return None
        if self.choices:
            if isinstance(value, str) and value in self.choices:
                return None
            shown = ", ".join(str(c) for c in self.choices)
            hint = did_you_mean(value, self.choices)
            return f"{where}: unknown {name} {value!r}{hint} Valid: {shown}."
        try:
            ok = self.check(value)
        except (TypeError, ValueError):
            ok = False
        return None if ok else f"{where}: {name} must be {self.allowed} (got {value!r})."

    def shown_default(self) -> str:
        """The default as the README shows it."""
        if self.required:
            return "required"
        if self.default is None:
            return "—"
        return f"`{_json(self.default)}`"


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def check_keys(
    where: str,
    raw: Mapping[str, Any],
    keys: Mapping[str, Key],
    problems: list[str],
    *,
    ignore: frozenset[str] = frozenset(),
    prefix: str = "",
) -> None:
    """Append every problem of ``raw`` against ``keys``: unknown, missing and invalid values.

    Args:
        where: names the object in messages (``'model_id' variant``, ``entry 3``, a file).
        raw: the parsed JSON object.
        keys: the allowed keys by name.
        problems: where one line per problem is appended.
        ignore: keys accepted here without a check (validated elsewhere, e.g. ``method``).
        prefix: the object's path inside the entry (``"variant."``), shown before key names.
    """
    allowed = set(keys) | set(ignore)
    for name in sorted(set(raw) - allowed, key=str):
        problems.append(
            f"{where}: unknown key '{prefix}{name}'{did_you_mean(name, allowed)} "
            f"Allowed: {', '.join(sorted(allowed))}."
        )
    for name, key in keys.items():
        if name not in raw:
            if key.required:
                problems.append(f"{where}: missing key '{prefix}{name}' ({key.allowed}).")
            continue
        message = key.problem(where, raw[name], prefix)
        if message is not None:
            problems.append(message)


def markdown_table(keys: Mapping[str, Key]) -> str:
    """The keys as a Markdown table: key, type, allowed values, default, meaning."""
    lines = ["| key | type | allowed | default | meaning |", "|---|---|---|---|---|"]
    for key in keys.values():
        allowed = ", ".join(f"`{c}`" for c in key.choices) if key.choices else key.allowed
        if key.nullable:
            allowed += " (or null)"
        lines.append(
            f"| `{key.name}` | {key.kind} | {allowed} | {key.shown_default()} | {key.doc} |"
        )
    return "\n".join(lines)


# -- key constructors ---------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def _in_interval(
    value: float, low: float | None, high: float | None, low_open: bool, high_open: bool
) -> bool:
    if low is not None and (value <= low if low_open else value < low):
        return False
    return not (high is not None and (value >= high if high_open else value > high))


def number(
    name: str,
    default: float | None = None,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    doc: str = "",
    **extra: Any,
) -> Key:
    """A finite number (JSON int or float, not a bool), optionally in an interval."""
    span = _interval(low, high, low_open, high_open)
    return Key(
        name,
        "number",
        f"a finite number {span}".strip(),
        lambda v: _is_number(v) and _in_interval(v, low, high, low_open, high_open),
        default,
        doc=doc,
        **extra,
    )


def integer(
    name: str, default: int | None = None, *, low: int | None = None, doc: str = "", **extra: Any
) -> Key:
    """An integer (not a bool), optionally ``>= low``."""
    allowed = {None: "an integer", 0: "an integer >= 0", 1: "a positive integer"}.get(
        low, f"an integer >= {low}"
    )
    return Key(
        name,
        "integer",
        allowed,
        lambda v: _is_int(v) and (low is None or v >= low),
        default,
        doc=doc,
        **extra,
    )


def boolean(name: str, default: bool | None = None, *, doc: str = "", **extra: Any) -> Key:
    """``true`` or ``false``."""
    return Key(
        name, "bool", "true or false", lambda v: isinstance(v, bool), default, doc=doc, **extra
    )


def choice(
    name: str, choices: tuple[Any, ...], default: Any = None, *, doc: str = "", **extra: Any
) -> Key:
    """One of ``choices``."""
    return Key(
        name,
        "string",
        "one of " + ", ".join(str(c) for c in choices),
        lambda v: v in choices,
        default,
        choices=tuple(choices),
        doc=doc,
        **extra,
    )


def string(name: str, default: str | None = None, *, doc: str = "", **extra: Any) -> Key:
    """A non-empty string."""
    return Key(
        name,
        "string",
        "a non-empty string",
        lambda v: isinstance(v, str) and bool(v),
        default,
        doc=doc,
        **extra,
    )


def strings(name: str, *, doc: str = "", **extra: Any) -> Key:
    """A list of strings (possibly empty)."""
    return Key(
        name,
        "list of strings",
        "a list of strings",
        lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
        [] if "default" not in extra else extra.pop("default"),
        doc=doc,
        **extra,
    )


def numbers(name: str, *, doc: str = "", **extra: Any) -> Key:
    """A non-empty list of finite numbers."""
    return Key(
        name,
        "list of numbers",
        "a non-empty list of finite numbers",
        lambda v: isinstance(v, list) and bool(v) and all(_is_number(x) for x in v),
        doc=doc,
        **extra,
    )


def json_object(name: str, *, doc: str = "", **extra: Any) -> Key:
    """A JSON object."""
    return Key(name, "object", "an object", lambda v: isinstance(v, dict), doc=doc, **extra)


def entry_id(name: str, *, doc: str = "", **extra: Any) -> Key:
    """The id of another entry of the models config."""
    return Key(
        name,
        "entry id",
        "the id of another entry",
        lambda v: isinstance(v, str) and bool(v),
        doc=doc,
        **extra,
    )


def entry_ids(name: str, *, single: bool = False, doc: str = "", **extra: Any) -> Key:
    """A non-empty list of entry ids (or, unless ``single``, one id); ``single``: exactly one."""
    if single:
        return Key(
            name,
            "entry id",
            "the id of one entry (or a list of exactly one)",
            lambda v: (
                (isinstance(v, str) and bool(v))
                or (isinstance(v, list) and len(v) == 1 and isinstance(v[0], str) and bool(v[0]))
            ),
            doc=doc,
            **extra,
        )
    return Key(
        name,
        "entry ids",
        "an entry id or a non-empty list of entry ids",
        lambda v: (
            (isinstance(v, str) and bool(v))
            or (isinstance(v, list) and bool(v) and all(isinstance(i, str) and i for i in v))
        ),
        doc=doc,
        **extra,
    )


def split_ref(name: str, *, doc: str = "", **extra: Any) -> Key:
    """A dataset split, ``"<dataset>:<split>"`` (e.g. ``"wds/digits:val"``)."""
    return Key(
        name,
        "split",
        "'<dataset>:<split>', e.g. 'wds/digits:val'",
        lambda v: isinstance(v, str) and all(v.rpartition(":")[::2]) and ":" in v,
        doc=doc,
        **extra,
    )
