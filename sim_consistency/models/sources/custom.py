"""The ``custom`` source: thingsvision's custom models, as far as they are open_clip models.

``OpenCLIP`` (``model_parameters: {"variant": "ViT-B-16", "dataset": "openai"}``) and ``clip``
(OpenAI CLIP by ``variant``, e.g. ``"ViT-B/32"``) are built by the ``open_clip`` source (same
visual tower, same preprocessing, weights from the Hugging Face cache). Names that need other
packages (:data:`~.rep2rep.CUSTOM_MODELS`: Kakaobrain_Align, DreamSim) load with the config, so
Rep2Rep's files stay usable, and are refused with what they need when built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from sim_consistency.config.models import ModelSpec
from sim_consistency.errors import ConfigError
from sim_consistency.models.sources._base import BuiltModel, entry_where
from sim_consistency.models.sources._spec import (
    SourceSpec,
    check_choice,
    parse_weights_file,
    unknown_parameters,
)
from sim_consistency.models.sources.open_clip import build_open_clip, open_clip_onto
from sim_consistency.models.sources.rep2rep import CUSTOM_MODELS

__all__ = ["CustomSpec", "build_custom", "custom_onto"]


@dataclass(frozen=True)
class CustomSpec(SourceSpec):
    """A thingsvision custom model.

    Attributes:
        model_name: a :data:`~.rep2rep.CUSTOM_MODELS` name.
        variant: open_clip architecture (``ViT-B-16``; OpenAI's ``ViT-B/32`` spelling accepted).
        dataset: open_clip pretrained tag (``openai`` for ``clip``).
        weights: a local full-CLIP checkpoint instead of the tag's file.
        refusal: why this name cannot be built here (``None`` when it can).
    """

    KEYS = frozenset({"model_name", "weights"})
    REQUIRED = frozenset({"model_name"})

    model_name: str
    variant: str | None = None
    dataset: str | None = None
    weights: Path | None = None
    refusal: str | None = None

    def without_weights(self) -> CustomSpec:
        return replace(self, dataset=None, weights=None)

    @property
    def label(self) -> str:
        return "_".join(p for p in (self.model_name, self.variant, self.dataset) if p)

    @classmethod
    def parse(
        cls,
        entry: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        where: str,
        base_dir: Path,
        problems: list[str],
    ) -> CustomSpec | None:
        n_before = len(problems)
        name = entry["model_name"]
        if not check_choice(where, "custom model_name", name, list(CUSTOM_MODELS), problems):
            return None
        refusal = CUSTOM_MODELS[name]
        variant = parameters.get("variant")
        dataset = parameters.get("dataset", "openai" if name == "clip" else None)
        if refusal is None:
            unknown_parameters(
                where, f"custom {name}", parameters, problems, allowed=("variant", "dataset")
            )
            if not isinstance(variant, str):
                problems.append(f"{where}: custom {name} needs model_parameters.variant.")
            if not isinstance(dataset, str) and entry.get("weights") is None:
                problems.append(
                    f"{where}: custom {name} needs model_parameters.dataset (or a weights file)."
                )
            if isinstance(variant, str):
                import open_clip

                variant = variant.replace("/", "-")
                known = check_choice(
                    where, "OpenCLIP variant", variant, open_clip.list_models(), problems
                )
                if known and isinstance(dataset, str):
                    tags = open_clip.list_pretrained_tags_by_model(variant)
                    check_choice(where, f"OpenCLIP dataset of {variant}", dataset, tags, problems)
        weights = parse_weights_file(entry, base_dir, where, problems)
        if len(problems) > n_before:
            return None
        return cls(
            model_name=name,
            variant=variant if isinstance(variant, str) else None,
            dataset=dataset if isinstance(dataset, str) else None,
            weights=weights,
            refusal=refusal,
        )


def _as_open_clip(spec: ModelSpec) -> ModelSpec:
    opts: CustomSpec = spec.options
    if opts.refusal is not None:
        raise ConfigError(f"{entry_where(spec)}: {opts.refusal}")
    return replace(
        spec,
        source="open_clip",
        model_name=opts.variant,
        pretrained=opts.dataset or False,
        weights=opts.weights,
        options=None,
    )


def build_custom(
    spec: ModelSpec, specs: Mapping[str, ModelSpec], *, models_dir: Path | None = None
) -> BuiltModel:
    """Build a ``custom`` entry through the open_clip source, or refuse it clearly.

    Raises:
        ConfigError: a name that needs packages or weights this platform does not have.
        WeightsNotFoundError: the open_clip weights are not cached.
    """
    return build_open_clip(_as_open_clip(spec), specs, models_dir=models_dir)


def custom_onto(
    arch: ModelSpec,
    state_dict: dict[str, torch.Tensor],
    *,
    file: Path,
    where: str,
    num_classes: int | None = None,
    img_size: int | None = None,
) -> BuiltModel:
    """Load a checkpoint / variant state dict onto a custom (open_clip) architecture."""
    return open_clip_onto(
        _as_open_clip(arch), state_dict, file=file, where=where, img_size=img_size
    )
