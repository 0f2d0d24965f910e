"""The base of per-source spec classes: the validated, source-specific part of an entry.

Every base source has a spec class in its own module; it declares the top-level keys it reads
(:attr:`SourceSpec.KEYS`, :attr:`SourceSpec.REQUIRED`) and parses them, with the source's
``model_parameters``, in :meth:`SourceSpec.parse`, reporting every problem into the config
loader's list. The loader (``sim_consistency.config.models``) puts
:meth:`SourceSpec.model_fields` on the ``ModelSpec``: the spec itself as ``ModelSpec.options``
(torchvision, ssl, custom, hf, python), or, for timm, open_clip and checkpoint, the
``model_name`` / ``pretrained`` / ``weights`` / ``arch`` / ``path`` fields their builders (and
content keys) have always read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "NamedModelSpec",
    "SourceSpec",
    "check_choice",
    "parse_weights_file",
    "resolve_file",
    "unknown_parameters",
]


@dataclass(frozen=True)
class SourceSpec:
    """Validated options of one source; subclasses add their fields.

    Attributes:
        KEYS: top-level keys the source reads (besides ``source`` and the common keys).
        REQUIRED: keys among ``KEYS`` that must be present.
    """

    KEYS: ClassVar[frozenset[str]] = frozenset()
    REQUIRED: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def parse(
        cls,
        entry: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        where: str,
        base_dir: Path,
        problems: list[str],
    ) -> SourceSpec | None:
        """Return the spec of ``entry``, or ``None`` after appending to ``problems``.

        Args:
            entry: the raw models-config entry (unknown top-level keys already reported).
            parameters: ``model_parameters`` minus the representation keys.
            where: the entry, for messages (``'model_id'``).
            base_dir: folder that relative paths are resolved against.
            problems: where every problem is appended, one line each.
        """
        raise NotImplementedError

    @property
    def label(self) -> str:
        """A short human name of the architecture (``ModelSpec.model_name``)."""
        raise NotImplementedError

    def without_weights(self) -> SourceSpec:
        """The same architecture and preprocessing, built without loading any weights."""
        raise NotImplementedError

    def model_fields(self) -> dict[str, Any]:
        """The ``ModelSpec`` fields this spec fills (default: the label and the spec itself)."""
        return {"model_name": self.label, "options": self}

    def recipe(self) -> dict[str, Any]:
        """Return the spec as plain JSON (hashed into content keys)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = _plain(value)
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if hasattr(value, "recipe"):
        return value.recipe()
    return value


def resolve_file(value: Any, base_dir: Path) -> Path:
    """``value`` as an absolute path (``~`` expanded, relative to ``base_dir``)."""
    p = Path(os.path.expanduser(str(value)))
    return p if p.is_absolute() else (base_dir / p).resolve()


def check_choice(
    where: str, key: str, value: Any, choices: list[str] | tuple[str, ...], problems: list[str]
) -> bool:
    """Append a problem naming the close matches when ``value`` is not one of ``choices``."""
    import difflib

    if value in choices:
        return True
    close = difflib.get_close_matches(str(value), list(choices), n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
    shown = ", ".join(list(choices)[:30]) + (", …" if len(choices) > 30 else "")
    problems.append(f"{where}: unknown {key} {value!r}{hint} Valid: {shown}.")
    return False


def parse_weights_file(
    entry: Mapping[str, Any], base_dir: Path, where: str, problems: list[str]
) -> Path | None:
    """The entry's ``weights`` file, resolved; a problem is appended when it does not exist."""
    if entry.get("weights") is None:
        return None
    weights = resolve_file(entry["weights"], base_dir)
    if not weights.is_file():
        problems.append(f"{where}: weights file {weights} does not exist.")
    return weights


#: ``model_parameters`` keys every source accepts (the representation, read by the loader).
_TOKEN_KEYS = ("extract_cls_token", "token_extraction")


def unknown_parameters(
    where: str,
    source: str,
    parameters: Mapping[str, Any],
    problems: list[str],
    *,
    allowed: tuple[str, ...] = (),
    note: str = "",
) -> None:
    """Report every ``model_parameters`` key of ``source`` not in ``allowed``.

    Args:
        where: the entry, for messages.
        source: the source (or ``custom <name>``), for messages.
        parameters: ``model_parameters`` minus the representation keys.
        problems: where one line per unknown key is appended.
        allowed: the source's own keys (the representation keys are always allowed).
        note: a sentence added to each message (e.g. where such values go instead).
    """
    from sim_consistency.config.schema import did_you_mean

    valid = (*allowed, *_TOKEN_KEYS)
    for key in sorted(set(parameters) - set(allowed)):
        problems.append(
            f"{where}: unknown key 'model_parameters.{key}'{did_you_mean(key, valid)} "
            f"Source '{source}' takes model_parameters: {', '.join(valid)}.{note}"
        )


@dataclass(frozen=True)
class NamedModelSpec(SourceSpec):
    """A model named in a library's registry (timm, open_clip): name, pretrained tag, weights.

    Attributes:
        model_name: the library's architecture name.
        pretrained: ``True``/``False`` or a pretrained tag; Rep2Rep's dialect (an entry with
            ``model_parameters``) means the pretrained model when ``pretrained`` is absent.
        weights: local weights file used instead of any download (absolute).
    """

    KEYS: ClassVar[frozenset[str]] = frozenset({"model_name", "pretrained", "weights"})
    REQUIRED: ClassVar[frozenset[str]] = frozenset({"model_name"})
    SOURCE: ClassVar[str] = ""

    model_name: str = ""
    pretrained: bool | str = False
    weights: Path | None = None

    @classmethod
    def parse(
        cls,
        entry: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        where: str,
        base_dir: Path,
        problems: list[str],
    ) -> NamedModelSpec | None:
        n_before = len(problems)
        unknown_parameters(where, cls.SOURCE, parameters, problems)
        model_name = entry["model_name"]
        if not isinstance(model_name, str):
            problems.append(f"{where}: model_name must be a string (got {model_name!r}).")
        pretrained = entry.get("pretrained", "model_parameters" in entry)
        if not isinstance(pretrained, bool | str):
            problems.append(
                f"{where}: pretrained must be true/false or a tag string (got {pretrained!r})."
            )
        weights = parse_weights_file(entry, base_dir, where, problems)
        if len(problems) > n_before:
            return None
        return cls(model_name=model_name, pretrained=pretrained, weights=weights)

    @property
    def label(self) -> str:
        return self.model_name

    def without_weights(self) -> NamedModelSpec:
        return replace(self, pretrained=False, weights=None)

    def model_fields(self) -> dict[str, Any]:
        """Name, tag and weights live on ``ModelSpec`` itself, where the builders read them."""
        return {
            "model_name": self.model_name,
            "pretrained": self.pretrained,
            "weights": self.weights,
        }
