"""The models config: JSON -> frozen, validated :class:`ModelSpec` entries.

:func:`load_models_config` is the single door through which a models config enters the
program. It rejects unknown keys and sources, resolves ``arch`` / ``base`` / ``ingredients``
references, detects reference cycles and checks that local files exist — all before any model is
built — and reports every problem of the file at once, each line naming its entry.

This module validates what every entry shares (:data:`COMMON_KEYS`, metadata, Rep2Rep's
:data:`REPRESENTATION_KEYS`) against the shared constraint table
(:mod:`sim_consistency.config.schema`); variants are validated by their method's spec class
(:mod:`sim_consistency.config.variants`) and each base source's own keys by its spec class, next
to its builder (``SOURCE_SPECS`` in :mod:`sim_consistency.models.sources.specs`).

Format (a superset of Rep2Rep's ``models_config``)::

    {"vit": {"source": "timm", "model_name": "vit_tiny_patch16_224", "pretrained": true},
     "run_1": {"source": "checkpoint", "arch": "vit", "path": "models/run_1.pt"},
     "soup": {"variant": {"method": "uniform", "ingredients": ["run_1", "run_2"]}}}
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from sim_consistency.config.schema import (
    Key,
    boolean,
    check_keys,
    choice,
    did_you_mean,
    integer,
    json_object,
    string,
)
from sim_consistency.config.variants import (
    MONOSOUP_PRESETS,
    VARIANT_METHOD_KEYS,
    VariantSpec,
    freeze,
    parse_variant,
    thaw,
)
from sim_consistency.errors import ConfigError, MissingInputError

__all__ = [
    "ModelSpec",
    "VariantSpec",
    "load_models_config",
    "parse_models_config",
    "select_models",
    "VARIANT_METHOD_KEYS",
    "MONOSOUP_PRESETS",
    "POOLINGS",
    "TOKEN_EXTRACTIONS",
    "REP2REP_METADATA_KEYS",
    "COMMON_KEYS",
    "REPRESENTATION_KEYS",
]

Pooling = Literal["gap", "cls", "mean_patch", "mean_all"]
POOLINGS: tuple[str, ...] = ("gap", "cls", "mean_patch", "mean_all")

#: Rep2Rep's (thingsvision's) token reductions of a ``module_name`` output with > 2 axes.
TOKEN_EXTRACTIONS: tuple[str, ...] = ("cls_token", "avg_pool", "cls_token+avg_pool")
#: Rep2Rep's descriptive keys: accepted at top level and kept as metadata (grouping columns).
REP2REP_METADATA_KEYS = frozenset({"dataset", "architecture", "embedding_dim", "size", "size_fmt"})

#: Metadata keys accepted at top level (Rep2Rep style) and folded into ``metadata``.
_METADATA_KEYS = {
    "objective",
    "architecture_class",
    "model_type",
    "dataset_class",
    "size_class",
    "training_data",
    "description",
} | set(REP2REP_METADATA_KEYS)


def _valid_blocks(value: Any) -> bool:
    if isinstance(value, str):
        try:
            re.compile(value)
        except re.error:
            return False
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(b, str) for b in value)


#: Keys every entry may carry, whatever its source (besides the metadata keys).
COMMON_KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        integer("num_classes", low=0, nullable=True, doc="classifier size (default: the model's)"),
        Key(
            "blocks",
            "regex or list",
            "a compiling regex string or a non-empty list of module names",
            _valid_blocks,
            nullable=True,
            doc="blocks whose features are extracted (default: every block of the family)",
        ),
        choice("pooling", POOLINGS, nullable=True, doc="token / map pooling (default per family)"),
        integer("img_size", low=1, nullable=True, doc="input resolution override"),
        json_object("metadata", nullable=True, doc="free-form grouping fields"),
    )
}
#: Rep2Rep's representation keys, valid on every base source.
REPRESENTATION_KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        string("module_name", nullable=True, doc="module whose output is the `rep2rep` block"),
        json_object("model_parameters", doc="the source's parameters + token_extraction"),
        Key(
            "alignment",
            "string",
            "a string",
            lambda v: isinstance(v, str),
            nullable=True,
            doc="Rep2Rep's gLocal alignment name (kept as metadata)",
        ),
    )
}
#: Keys of ``model_parameters`` that choose the representation (the rest belong to the source).
TOKEN_PARAMETERS: dict[str, Key] = {
    k.name: k
    for k in (
        boolean("extract_cls_token", False, doc="Rep2Rep: `true` means `cls_token`"),
        choice(
            "token_extraction",
            TOKEN_EXTRACTIONS,
            nullable=True,
            doc="reduction of an output with > 2 axes (default: flatten)",
        ),
    )
}
_METADATA_TABLE = {k: Key(k, "any", "any JSON value", lambda v: True) for k in _METADATA_KEYS}


@dataclass(frozen=True)
class ModelSpec:
    """One validated entry of a models config.

    Attributes:
        model_id: the entry's key; names every output of this model.
        source: ``timm``, ``open_clip``, ``checkpoint``, ``variant``, or one of the sources
            with their own spec class (``torchvision``, ``ssl``, ``custom``, ``hf``,
            ``python``).
        model_name: timm / open_clip architecture name.
        pretrained: ``True``/``False`` or a pretrained tag (timm ``.tag``, open_clip tag).
        weights: local weights file used instead of any download (absolute).
        arch: for ``checkpoint``: id of the entry that defines the architecture.
        path: for ``checkpoint``: the state-dict file (absolute).
        variant: for ``variant``: the merge recipe.
        num_classes: timm classifier size (``None`` keeps the architecture's default).
        blocks: ``None`` (every block of the family), a regex string, or explicit names.
        pooling: token/map pooling (``None``: ``cls`` for tokens with a class token, else
            ``mean_all``; ``gap`` for conv maps).
        img_size: input resolution override.
        metadata: free-form grouping fields carried into results.
        options: the validated source-specific spec (``SOURCE_SPECS``) of torchvision, ssl,
            custom, hf and python entries; ``None`` for timm, open_clip and checkpoint, whose
            specs fill the fields above.
        module_name: Rep2Rep's representation module (its output is the ``rep2rep`` block).
        token_extraction: how that output is reduced when it has > 2 axes
            (:data:`TOKEN_EXTRACTIONS`); ``None`` flattens it, as thingsvision does.
        alignment: Rep2Rep's gLocal alignment name, or ``None`` (kept; see the README).
    """

    model_id: str
    source: Literal[
        "timm", "open_clip", "checkpoint", "variant", "torchvision", "python", "ssl", "custom", "hf"
    ]
    model_name: str | None = None
    pretrained: bool | str = False
    weights: Path | None = None
    arch: str | None = None
    path: Path | None = None
    variant: VariantSpec | None = None
    num_classes: int | None = None
    blocks: str | tuple[str, ...] | None = None
    pooling: Pooling | None = None
    img_size: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    options: Any = None
    module_name: str | None = None
    token_extraction: str | None = None
    alignment: str | None = None

    @property
    def is_variant(self) -> bool:
        return self.source == "variant"

    def references(self) -> tuple[str, ...]:
        """Ids of the entries this one depends on (``arch`` or variant references)."""
        if self.variant is not None:
            return self.variant.references()
        if self.arch is not None:
            return (self.arch,)
        return ()

    def recipe(self) -> dict[str, Any]:
        """Return the entry as plain JSON: what determines the model (for keys and outputs)."""
        out: dict[str, Any] = {"model_id": self.model_id, "source": self.source}
        for name in (
            "model_name",
            "pretrained",
            "weights",
            "arch",
            "path",
            "num_classes",
            "blocks",
            "pooling",
            "img_size",
            "module_name",
            "token_extraction",
            "alignment",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = thaw(value)
        if self.options is not None:
            out["options"] = self.options.recipe()
        if self.variant is not None:
            out["variant"] = self.variant.to_json()
        return out


# -- loading --------------------------------------------------------------------------------


def load_models_config(
    path: str | os.PathLike, *, base_dir: str | os.PathLike | None = None
) -> dict[str, ModelSpec]:
    """Read, validate and resolve a models config file.

    Args:
        path: the JSON file.
        base_dir: folder against which relative ``path`` / ``weights`` values are resolved
            (default: the project root passed by stages, else the config's folder).

    Returns:
        ``{model_id: ModelSpec}`` in file order.

    Raises:
        MissingInputError: the config file does not exist.
        ConfigError: anything wrong inside it; the message lists every problem, one per line.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: models config not found. Pass --models_config FILE.")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}).") from exc
    return parse_models_config(
        _code_paths_from(raw, path.parent),
        source_name=str(path),
        base_dir=Path(base_dir) if base_dir else path.parent,
    )


def _code_paths_from(raw: Any, config_dir: Path) -> Any:
    """Resolve relative ``python_path`` folders against the config's folder.

    A user's code lives beside the config that names it, wherever the project root is; weights
    and checkpoints stay relative to ``base_dir`` (the project root in the stages).
    """
    if not isinstance(raw, dict):
        return raw
    resolved = {}
    for model_id, entry in raw.items():
        if isinstance(entry, dict) and "python_path" in entry:
            paths = entry["python_path"]
            if isinstance(paths, str):
                paths = [paths]
            if isinstance(paths, list) and all(isinstance(p, str) for p in paths):
                entry = {**entry, "python_path": [str(config_dir / p) for p in paths]}
        resolved[model_id] = entry
    return resolved


def parse_models_config(
    raw: Any, *, source_name: str = "<models config>", base_dir: str | os.PathLike = "."
) -> dict[str, ModelSpec]:
    """Validate an already-parsed models config (see :func:`load_models_config`)."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"{source_name}: a models config is a non-empty JSON object "
            f"{{model_id: entry}} (got {type(raw).__name__})."
        )
    problems: list[str] = []
    specs: dict[str, ModelSpec] = {}
    for model_id, entry in raw.items():
        spec = _parse_entry(model_id, entry, Path(base_dir), problems)
        if spec is not None:
            specs[model_id] = spec
    _check_references(specs, set(raw), problems)
    if problems:
        lines = "\n".join(f"  entry {p}" for p in problems)
        raise ConfigError(f"{source_name}: {len(problems)} problem(s):\n{lines}")
    return specs


def select_models(specs: Mapping[str, ModelSpec], model_keys: list[str] | None) -> list[str]:
    """Return the requested model ids (all when ``model_keys`` is empty), checked to exist."""
    if not model_keys:
        return list(specs)
    unknown = [k for k in model_keys if k not in specs]
    if unknown:
        hints = [_did_you_mean(k, specs) for k in unknown]
        raise ConfigError(
            "--model_key: unknown model id(s) "
            + ", ".join(f"'{k}'{h}" for k, h in zip(unknown, hints, strict=True))
            + f" Known: {', '.join(specs)}."
        )
    return list(dict.fromkeys(model_keys))


def _did_you_mean(name: str, choices: Any) -> str:
    return did_you_mean(name, choices)


def _parse_entry(
    model_id: str, entry: Any, base_dir: Path, problems: list[str]
) -> ModelSpec | None:
    where = f"'{model_id}'"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", model_id):
        problems.append(
            f"{where}: model ids name files, so they may only contain letters, digits and "
            "'_.+-' and must start with a letter or digit."
        )
        return None
    if not isinstance(entry, dict):
        problems.append(f"{where}: an entry is a JSON object (got {type(entry).__name__}).")
        return None
    n_before = len(problems)
    common_values = {k: entry[k] for k in COMMON_KEYS if k in entry}
    check_keys(where, common_values, COMMON_KEYS, problems)
    metadata = dict(entry.get("metadata") or {}) if isinstance(entry.get("metadata"), dict) else {}
    metadata.update({key: entry[key] for key in _METADATA_KEYS if key in entry})
    common: dict[str, Any] = {name: entry.get(name) for name in COMMON_KEYS}
    if isinstance(common["blocks"], list):
        common["blocks"] = tuple(common["blocks"])
    common["metadata"] = freeze(metadata)
    shared = {**COMMON_KEYS, **_METADATA_TABLE}

    # -- variant entries ------------------------------------------------------------------
    if "variant" in entry:
        check_keys(where, entry, {}, problems, ignore=frozenset(shared) | {"variant"})
        variant = parse_variant(where, entry["variant"], problems)
        if len(problems) > n_before or variant is None:
            return None
        return ModelSpec(model_id=model_id, source="variant", variant=variant, **common)

    # -- base entries ---------------------------------------------------------------------
    from sim_consistency.models.sources.specs import SOURCE_SPECS  # specs live by their builders

    all_sources = list(SOURCE_SPECS)
    source = entry.get("source")
    if source is None:
        problems.append(
            f"{where}: missing 'source' (one of {', '.join(all_sources)}) or 'variant'."
        )
        return None
    if source not in all_sources:
        problems.append(
            f"{where}: unknown source {source!r}{did_you_mean(str(source), all_sources)} "
            f"Valid: {', '.join(all_sources)}, or a 'variant' object."
        )
        return None
    spec_class = SOURCE_SPECS[source]
    allowed = frozenset(spec_class.KEYS | set(shared) | set(REPRESENTATION_KEYS) | {"source"})
    check_keys(where, entry, {}, problems, ignore=allowed)
    parameters = _parse_representation(where, entry, common, problems)
    missing = sorted(spec_class.REQUIRED - set(entry))
    for key in missing:
        problems.append(f"{where}: source '{source}' needs key '{key}'.")
    if missing:
        return None
    options = spec_class.parse(entry, parameters, where=where, base_dir=base_dir, problems=problems)
    if len(problems) > n_before or options is None:
        return None
    return ModelSpec(model_id=model_id, source=source, **options.model_fields(), **common)


def _parse_representation(
    where: str, entry: Mapping[str, Any], common: dict[str, Any], problems: list[str]
) -> dict[str, Any]:
    """Parse Rep2Rep's representation keys into ``common``; return the source's parameters.

    ``module_name`` names the module whose output is the ``rep2rep`` block;
    ``model_parameters.token_extraction`` (or ``extract_cls_token: true``, meaning
    ``cls_token``) says how an output with > 2 axes is reduced; ``alignment`` is kept as given.
    The other ``model_parameters`` belong to the source and are returned.
    """
    check_keys(where, {k: entry[k] for k in REPRESENTATION_KEYS if k in entry},
               REPRESENTATION_KEYS, problems)  # fmt: skip
    module_name = entry.get("module_name")
    common["module_name"] = module_name if isinstance(module_name, str) else None
    alignment = entry.get("alignment")
    common["alignment"] = alignment if isinstance(alignment, str) else None
    parameters = entry.get("model_parameters", {})
    if not isinstance(parameters, dict):
        parameters = {}
    token_keys = {k: parameters[k] for k in TOKEN_PARAMETERS if k in parameters}
    check_keys(where, token_keys, TOKEN_PARAMETERS, problems, prefix="model_parameters.")
    token = parameters.get("token_extraction")
    if token is None and parameters.get("extract_cls_token") is True:
        token = "cls_token"
    if token is not None and module_name is None:
        problems.append(f"{where}: model_parameters.token_extraction needs 'module_name'.")
    common["token_extraction"] = token
    return {k: v for k, v in parameters.items() if k not in TOKEN_PARAMETERS}


def _check_references(specs: dict[str, ModelSpec], all_ids: set[str], problems: list[str]) -> None:
    """Report references to unknown entries and reference cycles.

    ``all_ids`` holds every entry of the file, including ones that failed validation, so an
    invalid entry is reported once for itself and not again as "unknown" by its users.
    """
    for spec in specs.values():
        for ref in spec.references():
            if ref not in all_ids:
                problems.append(
                    f"'{spec.model_id}': references unknown entry '{ref}'"
                    f"{_did_you_mean(ref, all_ids)}"
                )
            elif ref in specs and spec.arch is not None and specs[ref].source == "variant":
                problems.append(
                    f"'{spec.model_id}': arch '{ref}' is a variant; arch must name a timm or "
                    "open_clip entry that defines the architecture."
                )
    # Depth-first search for cycles; each cycle reported once, in path order.
    state: dict[str, int] = {}
    reported: set[frozenset[str]] = set()

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for ref in specs[node].references():
            if ref not in specs:
                continue  # unknown or invalid: reported above
            if state.get(ref) == 1:
                cycle = stack[stack.index(ref) :] + [ref]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    problems.append(f"'{node}': reference cycle {' -> '.join(cycle)}.")
            elif state.get(ref) is None:
                visit(ref, stack)
        stack.pop()
        state[node] = 2

    for model_id in specs:
        if state.get(model_id) is None:
            visit(model_id, [])


def dependency_order(specs: Mapping[str, ModelSpec], model_ids: list[str]) -> list[str]:
    """Return ``model_ids`` plus everything they reference, dependencies first."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(node: str) -> None:
        if node in seen:
            return
        seen.add(node)
        for ref in specs[node].references():
            visit(ref)
        order.append(node)

    for model_id in model_ids:
        visit(model_id)
    return order
