"""What every source shares: the built model, the spec chain, strict state-dict loading.

A source module builds an entry into a :class:`BuiltModel`; checkpoints and variants follow the
spec chain (:func:`architecture_chain`) to the entry that defines their architecture and load a
state dict onto it with :func:`load_strict` (every key and shape must match).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sim_consistency.config.models import ModelSpec
from sim_consistency.errors import ConfigError
from sim_consistency.jsonable import jsonable

__all__ = [
    "BuiltModel",
    "ModelBuilder",
    "architecture_chain",
    "architecture_spec",
    "inherited_option",
    "load_strict",
    "transform_steps",
    "weightless_spec",
    "entry_where",
]


@dataclass
class BuiltModel:
    """A freshly built network with the eval transform its pretrained config asks for.

    Attributes:
        model: the module to analyse (CPU, eval mode).
        transform: PIL image -> ``(3, h, w)`` tensor, the library's eval preprocessing.
        preprocessing: JSON-able description of ``transform`` (goes into content keys).
        arch_id: the models-config entry that defined the architecture.
        n_classes: classes of the logits ``model`` outputs, for sources whose models do not say
            so themselves (torchvision, python); ``None``: ask the model (timm, open_clip).
    """

    model: nn.Module
    transform: Callable[[Any], torch.Tensor]
    preprocessing: dict[str, Any]
    arch_id: str
    n_classes: int | None = None


#: ``builder(spec, specs, *, models_dir) -> BuiltModel``: one per entry of :data:`MODEL_SOURCES`.
ModelBuilder = Callable[..., BuiltModel]


def entry_where(spec: ModelSpec) -> str:
    return f"models config entry '{spec.model_id}'"


def architecture_chain(spec: ModelSpec, specs: Mapping[str, ModelSpec]) -> list[ModelSpec]:
    """Return ``spec`` followed by the entries it is built on, ending at an architecture entry.

    A checkpoint follows its ``arch``; a variant its first reference (first ingredient, or
    ``base``), recursively.

    Raises:
        ConfigError: a reference is unknown or the chain has no architecture entry.
    """
    chain = [spec]
    current = spec
    while current.source in ("checkpoint", "variant"):
        refs = current.references()
        if not refs or refs[0] not in specs:
            raise ConfigError(
                f"{entry_where(current)}: cannot find the entry that defines its architecture "
                f"(got references {list(refs)}). Name an existing entry that defines an architecture (timm, open_clip, torchvision, ssl, custom, hf or python)."
            )
        current = specs[refs[0]]
        if current in chain:
            raise ConfigError(f"{entry_where(spec)}: reference cycle through '{current.model_id}'.")
        chain.append(current)
    return chain


def architecture_spec(spec: ModelSpec, specs: Mapping[str, ModelSpec]) -> ModelSpec:
    """Return the architecture entry whose architecture ``spec`` is built on (itself if so)."""
    return architecture_chain(spec, specs)[-1]


def weightless_spec(spec: ModelSpec, specs: Mapping[str, ModelSpec]) -> ModelSpec:
    """Return the entry that builds ``spec``'s architecture without loading any weights.

    Used to list blocks on the meta device: checkpoints and variants resolve to their
    architecture entry (so a checkpoint's own head size is not read), pretrained tags and
    weights files are dropped; the model id stays ``spec``'s for messages.
    """
    arch = architecture_spec(spec, specs)
    if arch.options is not None:
        return replace(arch, model_id=spec.model_id, options=arch.options.without_weights())
    name = arch.model_name
    if arch.source == "timm" and isinstance(arch.pretrained, str) and name and "." not in name:
        name = f"{name}.{arch.pretrained}"  # the tag sets the head size
    return replace(arch, model_id=spec.model_id, model_name=name, pretrained=False, weights=None)


def inherited_option(spec: ModelSpec, specs: Mapping[str, ModelSpec], name: str) -> Any:
    """Return ``spec.<name>``, else the first value set along its architecture chain."""
    for entry in architecture_chain(spec, specs):
        value = getattr(entry, name)
        if value is not None:
            return value
    return None


def transform_steps(transform: Any) -> dict[str, Any]:
    """Resize/crop sizes and step names of a torchvision ``Compose`` (for the content key)."""
    steps = getattr(transform, "transforms", [transform])
    names, resize, crop = [], None, None
    for step in steps:
        names.append(getattr(step, "__name__", type(step).__name__))
        if resize is None and type(step).__name__ in ("Resize", "ResizeKeepRatio"):
            resize = jsonable(getattr(step, "size", None))
        if crop is None and type(step).__name__ in ("CenterCrop", "CenterCropOrPad"):
            crop = jsonable(getattr(step, "size", None))
    return {"resize": resize, "crop": crop, "steps": names}


def key_problems(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} (file {tuple(state_dict[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    for label, keys in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("shape mismatch", mismatched),
    ):
        if keys:
            examples = ", ".join(keys[:5]) + (", …" if len(keys) > 5 else "")
            problems.append(f"{len(keys)} {label} ({examples})")
    return problems


def load_strict(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    file: Path,
    where: str,
    arch: ModelSpec,
    filter_fn: Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]] | None,
) -> None:
    """Load ``state_dict`` into ``model`` with every key and shape matching.

    When the raw keys do not fit and the family has a checkpoint filter (timm's
    ``checkpoint_filter_fn``: foreign layouts, resized position embeddings), the filtered dict
    is used if it fits exactly.
    """
    problems = key_problems(model, state_dict)
    if problems and filter_fn is not None:
        try:
            filtered = filter_fn(dict(state_dict), model)
        except Exception:  # a filter that cannot parse this layout: report the raw mismatch
            filtered = None
        if filtered is not None and not key_problems(model, filtered):
            state_dict, problems = dict(filtered), []
    if problems:
        raise ConfigError(
            f"{file}: does not fit the architecture of '{arch.model_id}' "
            f"({arch.source} {arch.model_name}) for {where}: "
            + "; ".join(problems)
            + ". Check that 'arch' names the architecture the checkpoint was trained with."
        )
    model.load_state_dict(state_dict, strict=True)
