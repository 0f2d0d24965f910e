"""Model sources: how each ``source`` of a models-config entry becomes a network.

One module per source, each owning its builder (and, for the sources that define an
architecture, how a state dict is loaded onto it):

* :mod:`.timm` — ``timm.create_model``, pretrained / local weights the timm way.
* :mod:`.open_clip` — open_clip's visual tower, wrapped in a headless ``ImageClassifier``.
* :mod:`.checkpoint` — ``checkpoint`` and ``variant``: a state dict onto another entry's
  architecture, strictly.
* :mod:`.torchvision` — ``torchvision.models.get_model`` with a weights enum or local file.
* :mod:`.python` — the user's own factory ``"pkg.mod:fn"`` + kwargs + weights + transform.
* :mod:`.ssl_models` / :mod:`.custom` — Rep2Rep's (thingsvision's) ``ssl`` and ``custom``
  names, resolved through the tables of :mod:`.rep2rep`.
* :mod:`.hf` — Hugging Face ``transformers`` vision models from the local HF cache.

Every base source's spec class (its keys, validated when the models config is loaded) is listed
in :data:`SOURCE_SPECS` (:mod:`.specs`).

Shared pieces: :mod:`._hub` (offline-first weight lookup), :mod:`._base` (``BuiltModel``, the
spec chain, strict loading). :data:`MODEL_SOURCES` maps every ``ModelSpec.source`` to its
builder ``(spec, specs, *, models_dir) -> BuiltModel``; :data:`ARCHITECTURE_LOADERS` maps the
sources that define an architecture to ``(arch, state_dict, *, file, where, num_classes,
img_size) -> BuiltModel``.
"""

from __future__ import annotations

from collections.abc import Callable

from sim_consistency.models.sources._base import (
    BuiltModel,
    ModelBuilder,
    architecture_chain,
    architecture_spec,
    inherited_option,
    weightless_spec,
)
from sim_consistency.models.sources._hub import hf_hub_cache_dir, resolve_hub_file
from sim_consistency.models.sources.checkpoint import build_checkpoint, build_variant
from sim_consistency.models.sources.custom import build_custom, custom_onto
from sim_consistency.models.sources.hf import build_hf, hf_onto
from sim_consistency.models.sources.open_clip import build_open_clip, open_clip_onto
from sim_consistency.models.sources.python import build_python, python_onto
from sim_consistency.models.sources.specs import SOURCE_SPECS
from sim_consistency.models.sources.ssl_models import build_ssl, ssl_onto
from sim_consistency.models.sources.timm import build_timm, timm_onto
from sim_consistency.models.sources.torchvision import build_torchvision, torchvision_onto

__all__ = [
    "ARCHITECTURE_LOADERS",
    "MODEL_SOURCES",
    "SOURCE_SPECS",
    "BuiltModel",
    "ModelBuilder",
    "architecture_chain",
    "architecture_spec",
    "build_checkpoint",
    "build_open_clip",
    "build_timm",
    "build_variant",
    "hf_hub_cache_dir",
    "inherited_option",
    "resolve_hub_file",
    "weightless_spec",
]

#: Every ``ModelSpec.source``, mapped to the function that builds it.
MODEL_SOURCES: dict[str, ModelBuilder] = {
    "timm": build_timm,
    "open_clip": build_open_clip,
    "checkpoint": build_checkpoint,
    "variant": build_variant,
    "torchvision": build_torchvision,
    "python": build_python,
    "ssl": build_ssl,
    "custom": build_custom,
    "hf": build_hf,
}

#: Sources that define an architecture: how a checkpoint / variant state dict is loaded onto it.
ARCHITECTURE_LOADERS: dict[str, Callable[..., BuiltModel]] = {
    "timm": timm_onto,
    "open_clip": open_clip_onto,
    "torchvision": torchvision_onto,
    "python": python_onto,
    "ssl": ssl_onto,
    "custom": custom_onto,
    "hf": hf_onto,
}
