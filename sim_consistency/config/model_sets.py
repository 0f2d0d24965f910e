"""Model sets for combined and ensemble probes: the ``--model_sets`` JSON file.

Two forms are accepted:

* Rep2Rep's sampling output, unchanged: a JSON list of lists of model ids
  (``[["m1", "m2"], ["m1", "m3", "m4"]]``). As Rep2Rep does, each set is sorted and duplicate
  sets are dropped; a set is named by its ids joined with ``__`` (``m1__m2``).
* Named sets: ``{"model_sets": {"<name>": ["m1", "m2"], …}}``; the names (letters, digits,
  ``.``, ``_``, ``-``) become output folder names and the order of the ids is kept.

Every id must be a model of ``--models_config``. A set needs at least one id; an id may repeat
within a named set (a model concatenated with itself is the sanity check the tests use).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sim_consistency.config.schema import did_you_mean
from sim_consistency.errors import ConfigError

__all__ = ["load_model_sets", "parse_model_sets"]

_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def load_model_sets(path: str | Path, known: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Return ``{set name: model ids}`` from a model-sets JSON file (see the module docstring).

    Raises:
        ConfigError: missing or invalid file, bad set name, empty set, or unknown model id
            (the message names the file, the set and the id).
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--model_sets {path}: cannot read it ({exc.strerror}).") from None
    except ValueError as exc:
        raise ConfigError(f"--model_sets {path}: not valid JSON ({exc}).") from None
    return parse_model_sets(raw, known, where=str(path))


def parse_model_sets(
    raw: Any, known: Mapping[str, Any], *, where: str = "model sets"
) -> dict[str, tuple[str, ...]]:
    """Validate parsed model-sets JSON; see :func:`load_model_sets`."""
    sets: dict[str, tuple[str, ...]] = {}
    if isinstance(raw, list):
        for i, entry in enumerate(raw):
            ids = _ids(entry, f"{where}: set #{i}")
            key = tuple(sorted(ids))
            sets.setdefault("__".join(key), key)
    elif (
        isinstance(raw, dict) and set(raw) == {"model_sets"} and isinstance(raw["model_sets"], dict)
    ):
        for name, entry in raw["model_sets"].items():
            if not _NAME.match(name):
                raise ConfigError(
                    f"{where}: set name {name!r} must use only letters, digits, '.', '_' and '-' "
                    "(it names an output folder)."
                )
            sets[name] = _ids(entry, f"{where}: set {name!r}")
    else:
        raise ConfigError(
            f"{where}: expected a list of lists of model ids (Rep2Rep's sampling files) or "
            '{"model_sets": {"<name>": ["<model id>", ...]}} '
            f"(got {type(raw).__name__}{' with keys ' + str(sorted(raw)) if isinstance(raw, dict) else ''})."
        )
    if not sets:
        raise ConfigError(f"{where}: no model set.")
    for name, ids in sets.items():
        for model_id in ids:
            if model_id not in known:
                raise ConfigError(
                    f"{where}: set {name!r}: unknown model id {model_id!r}"
                    f"{did_you_mean(model_id, known)} It must be a model of --models_config "
                    f"(known: {', '.join(known)})."
                )
    return sets


def _ids(entry: Any, where: str) -> tuple[str, ...]:
    if not isinstance(entry, list) or not entry or not all(isinstance(m, str) for m in entry):
        raise ConfigError(
            f"{where}: expected a non-empty list of model id strings (got {entry!r})."
        )
    return tuple(entry)
