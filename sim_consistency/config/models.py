"""The models config: JSON -> frozen, validated :class:`ModelSpec` entries.

:func:`load_models_config` is the single door through which a models config enters the
program. It rejects unknown keys and sources, resolves ``arch`` / ``base`` / ``ingredients``
references, detects reference cycles and checks that local files exist — all before any model is
built — and reports every problem of the file at once, each line naming its entry.

This module parses only what every entry shares (common keys, metadata, Rep2Rep's
representation keys) and variants; each base source's own keys are validated by its spec class,
next to its builder (``SOURCE_SPECS`` in :mod:`sim_consistency.models.sources.specs`).

Format (a superset of Rep2Rep's ``models_config``)::

    {"vit": {"source": "timm", "model_name": "vit_tiny_patch16_224", "pretrained": true},
     "run_1": {"source": "checkpoint", "arch": "vit", "path": "models/run_1.pt"},
     "soup": {"variant": {"method": "uniform", "ingredients": ["run_1", "run_2"]}}}
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

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
]

Pooling = Literal["gap", "cls", "mean_patch", "mean_all"]
POOLINGS: tuple[str, ...] = ("gap", "cls", "mean_patch", "mean_all")

#: Rep2Rep's (thingsvision's) token reductions of a ``module_name`` output with > 2 axes.
TOKEN_EXTRACTIONS: tuple[str, ...] = ("cls_token", "avg_pool", "cls_token+avg_pool")
#: Rep2Rep's descriptive keys: accepted at top level and kept as metadata (grouping columns).
REP2REP_METADATA_KEYS = frozenset({"dataset", "architecture", "embedding_dim", "size", "size_fmt"})
#: Keys of Rep2Rep's representation, valid on every base source.
_REPRESENTATION_KEYS = {"module_name", "model_parameters", "alignment"}
#: Keys of ``model_parameters`` that choose the representation (the rest belong to the source).
_TOKEN_PARAMETERS = frozenset({"extract_cls_token", "token_extraction"})

#: Keys every entry may carry, whatever its source.
_COMMON_KEYS = {
    "num_classes",
    "blocks",
    "pooling",
    "img_size",
    "metadata",
    "objective",
    "architecture_class",
    "model_type",
    "dataset_class",
    "size_class",
    "training_data",
    "description",
} | set(REP2REP_METADATA_KEYS)
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

#: Keys of every averaging method: the BatchNorm policy (sim_consistency.merging.batchnorm).
_BN_KEYS = frozenset({"bn_policy", "bn_split", "anchor", "bn_max_samples"})
#: Keys of the methods that select ingredients by held-out accuracy (greedy, pruned).
_SELECTION_KEYS = frozenset({"ingredients", "heldout", "heldout_max_samples", "test"})
_MONOSOUP_KEYS = frozenset(
    {
        "base",
        "finetuned",
        "preset",
        "rank_rule",
        "R",
        "min_rel_update",
        "untouched_from",
        "include_buffers",
    }
)
#: MonoSoup settings of the reference scripts, picked by ``"preset"``; explicit keys override.
MONOSOUP_PRESETS: dict[str, dict[str, Any]] = {
    "clip": {"rank_rule": "freevariance", "R": 0.8, "min_rel_update": 1e-6},  # MonoSoup.py
    # Convnext_freevariance_vetterli.py
    "convnext": {"rank_rule": "vetterli", "R": 0.9, "min_rel_update": 1e-2},
    "convnext_cka": {"rank_rule": "vetterli", "R": 0.8, "min_rel_update": 1e-2},  # CKA_ConvNext.py
}

#: Allowed keys per variant method (besides ``method``); references are resolved to entries.
VARIANT_METHOD_KEYS: dict[str, frozenset[str]] = {
    "uniform": frozenset({"ingredients", "weights"}) | _BN_KEYS,
    "weighted": frozenset({"ingredients", "weights"}) | _BN_KEYS,
    "greedy": _SELECTION_KEYS | {"accept", "order", "seed", "metric"} | _BN_KEYS,
    "pruned": _SELECTION_KEYS | {"metric"} | _BN_KEYS,
    "wise_ft": frozenset({"base", "finetuned", "alpha"}) | _BN_KEYS,
    "task_arithmetic": frozenset({"base", "finetuned", "lam", "coeffs", "negate"}),
    "ties": frozenset({"base", "finetuned", "keep", "lam", "scope"}),
    "monosoup": _MONOSOUP_KEYS,
    "highonly": _MONOSOUP_KEYS,
    "lowonly": _MONOSOUP_KEYS,
    "interpolate": frozenset({"base", "finetuned", "alpha"}) | _BN_KEYS,
}
_REQUIRED_VARIANT_KEYS: dict[str, tuple[str, ...]] = {
    "uniform": ("ingredients",),
    "weighted": ("ingredients", "weights"),
    "greedy": ("ingredients", "heldout"),
    "pruned": ("ingredients", "heldout"),
    "wise_ft": ("base", "finetuned"),
    "task_arithmetic": ("base", "finetuned"),
    "ties": ("base", "finetuned"),
    "monosoup": ("base", "finetuned"),
    "highonly": ("base", "finetuned"),
    "lowonly": ("base", "finetuned"),
    "interpolate": ("base", "finetuned", "alpha"),
}
_REFERENCE_KEYS = ("ingredients", "base", "finetuned", "anchor")


def _freeze(value: Any) -> Any:
    """Turn JSON containers into immutable ones (dict -> mappingproxy, list -> tuple)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """Inverse of :func:`_freeze`: back to plain JSON types (for recipes and hashing)."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass(frozen=True)
class VariantSpec:
    """A model built from other entries by a merge method (soup, MonoSoup, WiSE-FT, …).

    Attributes:
        method: one of :data:`VARIANT_METHOD_KEYS`.
        options: every other key of the ``variant`` object, frozen (references included).
    """

    method: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def references(self) -> tuple[str, ...]:
        """Return the ids of the entries this variant is built from, in config order."""
        refs: list[str] = []
        for key in _REFERENCE_KEYS:
            value = self.options.get(key)
            if isinstance(value, str):
                refs.append(value)
            elif isinstance(value, tuple):
                refs.extend(v for v in value if isinstance(v, str))
        return tuple(dict.fromkeys(refs))

    def to_json(self) -> dict[str, Any]:
        """Return the variant as plain JSON (the recipe written next to its outputs)."""
        return {"method": self.method, **_thaw(self.options)}


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
                out[name] = _thaw(value)
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
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else "."


def _unknown_keys(where: str, keys: set[str], allowed: set[str], problems: list[str]) -> None:
    for key in sorted(keys - allowed):
        problems.append(
            f"{where}: unknown key '{key}'{_did_you_mean(key, allowed)} "
            f"Allowed: {', '.join(sorted(allowed))}."
        )


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
    keys = set(entry)
    common: dict[str, Any] = {}
    n_before = len(problems)

    # -- fields every source shares -------------------------------------------------------
    num_classes = entry.get("num_classes")
    if num_classes is not None and (
        not isinstance(num_classes, int) or num_classes < 0 or isinstance(num_classes, bool)
    ):
        problems.append(
            f"{where}: num_classes must be a non-negative integer (got {num_classes!r})."
        )
    common["num_classes"] = num_classes
    blocks = entry.get("blocks")
    if blocks is not None:
        if isinstance(blocks, str):
            try:
                re.compile(blocks)
            except re.error as exc:
                problems.append(f"{where}: blocks regex {blocks!r} does not compile ({exc}).")
        elif not (isinstance(blocks, list) and blocks and all(isinstance(b, str) for b in blocks)):
            problems.append(
                f"{where}: blocks must be a regex string or a non-empty list of module names "
                f"(got {blocks!r})."
            )
        else:
            blocks = tuple(blocks)
    common["blocks"] = blocks
    pooling = entry.get("pooling")
    if pooling is not None and pooling not in POOLINGS:
        problems.append(
            f"{where}: unknown pooling {pooling!r}{_did_you_mean(str(pooling), POOLINGS)} "
            f"Valid: {', '.join(POOLINGS)}."
        )
    common["pooling"] = pooling
    img_size = entry.get("img_size")
    if img_size is not None and (
        not isinstance(img_size, int) or isinstance(img_size, bool) or img_size <= 0
    ):
        problems.append(f"{where}: img_size must be a positive integer (got {img_size!r}).")
    common["img_size"] = img_size
    metadata = dict(entry.get("metadata") or {})
    if not isinstance(entry.get("metadata", {}), dict):
        problems.append(f"{where}: metadata must be an object (got {entry['metadata']!r}).")
    for key in _METADATA_KEYS & keys:
        metadata[key] = entry[key]
    common["metadata"] = _freeze(metadata)

    # -- variant entries ------------------------------------------------------------------
    if "variant" in entry:
        _unknown_keys(where, keys, _COMMON_KEYS | {"variant"}, problems)
        variant = _parse_variant(where, entry["variant"], problems)
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
            f"{where}: unknown source {source!r}{_did_you_mean(str(source), all_sources)} "
            f"Valid: {', '.join(all_sources)}, or a 'variant' object."
        )
        return None
    parameters = _parse_representation(where, entry, common, problems)
    spec_class = SOURCE_SPECS[source]
    allowed = set(spec_class.KEYS | _COMMON_KEYS | _REPRESENTATION_KEYS | {"source"})
    _unknown_keys(where, keys, allowed, problems)
    missing = sorted(spec_class.REQUIRED - keys)
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
    module_name = entry.get("module_name")
    if module_name is not None and (not isinstance(module_name, str) or not module_name):
        problems.append(f"{where}: module_name must be a module name (got {module_name!r}).")
    common["module_name"] = module_name
    alignment = entry.get("alignment")
    if alignment is not None and not isinstance(alignment, str):
        problems.append(f"{where}: alignment must be a string or null (got {alignment!r}).")
    common["alignment"] = alignment
    parameters = entry.get("model_parameters", {})
    if not isinstance(parameters, dict):
        problems.append(f"{where}: model_parameters must be an object (got {parameters!r}).")
        parameters = {}
    token = parameters.get("token_extraction")
    extract_cls = parameters.get("extract_cls_token", False)
    if not isinstance(extract_cls, bool):
        problems.append(
            f"{where}: model_parameters.extract_cls_token must be true/false (got {extract_cls!r})."
        )
    if token is not None and token not in TOKEN_EXTRACTIONS:
        problems.append(
            f"{where}: unknown model_parameters.token_extraction {token!r}"
            f"{_did_you_mean(str(token), TOKEN_EXTRACTIONS)} Valid: {', '.join(TOKEN_EXTRACTIONS)}."
        )
    if token is None and extract_cls is True:
        token = "cls_token"
    if (token is not None or extract_cls is True) and module_name is None:
        problems.append(f"{where}: model_parameters.token_extraction needs 'module_name'.")
    common["token_extraction"] = token
    return {k: v for k, v in parameters.items() if k not in _TOKEN_PARAMETERS}


def _parse_variant(where: str, variant: Any, problems: list[str]) -> VariantSpec | None:
    if not isinstance(variant, dict):
        problems.append(f"{where}: 'variant' must be an object with a 'method' (got {variant!r}).")
        return None
    method = variant.get("method")
    if method not in VARIANT_METHOD_KEYS:
        problems.append(
            f"{where}: unknown variant method {method!r}"
            f"{_did_you_mean(str(method), VARIANT_METHOD_KEYS)} "
            f"Valid: {', '.join(VARIANT_METHOD_KEYS)}."
        )
        return None
    options = {k: v for k, v in variant.items() if k != "method"}
    _unknown_keys(f"{where} variant", set(options), set(VARIANT_METHOD_KEYS[method]), problems)
    for key in _REQUIRED_VARIANT_KEYS[method]:
        if key not in options:
            problems.append(f"{where}: variant method '{method}' needs key '{key}'.")
    ingredients = options.get("ingredients")
    if ingredients is not None:
        if not isinstance(ingredients, list) or not all(isinstance(i, str) for i in ingredients):
            problems.append(
                f"{where}: ingredients must be a list of entry ids (got {ingredients!r})."
            )
        elif not ingredients:
            problems.append(f"{where}: ingredients is empty; a soup needs at least one ingredient.")
    for key in ("base", "anchor"):
        if key in options and not isinstance(options[key], str):
            problems.append(f"{where}: {key} must be an entry id (got {options[key]!r}).")
    preset = options.get("preset")
    if preset is not None and preset not in MONOSOUP_PRESETS:
        problems.append(
            f"{where}: unknown MonoSoup preset {preset!r}"
            f"{_did_you_mean(str(preset), MONOSOUP_PRESETS)} "
            f"Valid: {', '.join(MONOSOUP_PRESETS)}."
        )
    if "include_buffers" in options and not isinstance(options["include_buffers"], bool):
        problems.append(
            f"{where}: include_buffers must be true or false (got {options['include_buffers']!r})."
        )
    finetuned = options.get("finetuned")
    if finetuned is not None and not (
        isinstance(finetuned, str)
        or (
            isinstance(finetuned, list) and finetuned and all(isinstance(f, str) for f in finetuned)
        )
    ):
        problems.append(
            f"{where}: finetuned must be an entry id or a non-empty list of ids (got {finetuned!r})."
        )
    return VariantSpec(method=method, options=_freeze(options))


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
