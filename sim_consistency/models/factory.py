"""The model factory: a models-config entry -> a network ready for feature extraction.

:func:`create_model` is the one door: it builds the entry through :data:`MODEL_SOURCES`, moves
it to the device in eval mode, finds its blocks (:mod:`~sim_consistency.models.blocks`),
measures them with one dummy forward pass, digests the weights and returns everything a stage
needs — including the eval transform the model's own pretrained config asks for and its
JSON description, which feature-cache content keys hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sim_consistency.config.models import ModelSpec
from sim_consistency.errors import ConfigError
from sim_consistency.models.blocks import (
    BlockInfo,
    describe_blocks,
    detect_family,
    find_block_names,
)
from sim_consistency.models.checkpoints import state_dict_sha256
from sim_consistency.models.classifier import ImageClassifier
from sim_consistency.models.sources import MODEL_SOURCES, inherited_option, weightless_spec
from sim_consistency.project import ProjectLocation

__all__ = [
    "REP2REP_BLOCK",
    "LoadedModel",
    "Rep2RepBlock",
    "create_model",
    "default_pooling",
    "forward_logits",
    "init_seed",
]

#: Name under which Rep2Rep's representation (``module_name``) is stored next to the blocks.
REP2REP_BLOCK = "rep2rep"


@dataclass(frozen=True)
class Rep2RepBlock:
    """Rep2Rep's one representation of a model: the output of ``module_name``, reduced.

    Computed as thingsvision / Rep2Rep do (see
    :func:`~sim_consistency.features.pooling.rep2rep_representation`): token extraction or
    flattening, then L2-normalised rows, stored as float32 under :data:`REP2REP_BLOCK`.

    Attributes:
        module_name: the module whose output is the representation.
        token_extraction: ``cls_token``, ``avg_pool``, ``cls_token+avg_pool`` or ``None``
            (flatten).
        dim: width of the representation.
        output_shape: the module's raw output shape on the dummy batch of 2.
    """

    module_name: str
    token_extraction: str | None
    dim: int
    output_shape: tuple[int, ...]

    @property
    def pooling(self) -> str:
        """The block's pooling label (``token_extraction`` or ``flatten``)."""
        return self.token_extraction or "flatten"

    def attrs(self) -> dict[str, Any]:
        """What the cache records about the representation (and hashes into its key)."""
        return {
            "module_name": self.module_name,
            "token_extraction": self.pooling,
            "normalization": "l2",
            "storage_dtype": "float32",
            "dim": self.dim,
        }


_TOKEN_POOLINGS = ("cls", "mean_patch", "mean_all")


@dataclass
class LoadedModel:
    """A built model and everything known about it.

    Attributes:
        model_id: the models-config entry.
        model: the network, eval mode, on ``device``; ``model(x)`` returns logits when
            ``has_head`` (timm models, model-soups checkpoints), else embeddings.
        transform: PIL image -> ``(3, h, w)`` tensor, the model's eval preprocessing.
        preprocessing: JSON-able description of ``transform`` (input_size, mean, std,
            interpolation, resize, crop, …).
        family: :data:`~sim_consistency.models.blocks.BLOCK_FAMILIES` key, or ``None`` when the
            blocks were named by hand for an unknown family.
        block_names: recorded modules, in forward order.
        blocks: what each block outputs, same order.
        has_head: whether ``model`` ends in a classifier (so ``/logits`` exist).
        n_classes: classifier size, ``None`` without a head.
        weights_sha256: :func:`~sim_consistency.models.checkpoints.state_dict_sha256` of
            ``model.state_dict()`` (parameters and persistent buffers).
        recipe: ``spec.recipe()``.
        pooling: the model-wide token pooling (configured, or ``cls`` with a class token and
            ``mean_all`` without); conv maps always use ``gap``.
        block_pooling: the pooling of each block: ``gap`` for conv maps, ``pooling`` for
            tokens, ``none`` for vectors.
        device: where ``model`` lives.
        arch_id: the entry that defines the architecture (itself for timm / open_clip).
        rep2rep: Rep2Rep's representation, for entries with ``module_name`` (else ``None``).
    """

    model_id: str
    model: nn.Module
    transform: Callable[[Any], torch.Tensor]
    preprocessing: dict[str, Any]
    family: str | None
    block_names: list[str]
    blocks: list[BlockInfo]
    has_head: bool
    n_classes: int | None
    weights_sha256: str
    recipe: dict[str, Any]
    pooling: str
    block_pooling: dict[str, str]
    device: torch.device
    arch_id: str
    rep2rep: Rep2RepBlock | None = None

    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one preprocessed image."""
        c, h, w = self.preprocessing["input_size"]
        return int(c), int(h), int(w)


def default_pooling(blocks: list[BlockInfo]) -> str:
    """Return the default model-wide pooling for ``blocks``.

    Tokens: ``cls`` when they carry a class/register token, else ``mean_all``. Conv maps (and
    vectors) only: ``gap``.
    """
    tokens = [b for b in blocks if b.kind == "tokens"]
    if not tokens:
        return "gap"
    return "cls" if all(b.n_prefix_tokens > 0 for b in tokens) else "mean_all"


def _resolve_pooling(model_id: str, configured: str | None, blocks: list[BlockInfo]) -> str:
    if configured is None:
        return default_pooling(blocks)
    tokens = [b for b in blocks if b.kind == "tokens"]
    if configured in _TOKEN_POOLINGS and not tokens:
        raise ConfigError(
            f"models config entry '{model_id}': pooling {configured!r} pools tokens, but every "
            f"block is a conv map or vector (got kinds {sorted({b.kind for b in blocks})}). "
            "Use 'gap' or leave pooling out."
        )
    no_prefix = [b.name for b in tokens if b.n_prefix_tokens == 0]
    if configured in ("cls", "mean_patch") and no_prefix:
        raise ConfigError(
            f"models config entry '{model_id}': pooling {configured!r} needs a class token, but "
            f"block(s) {', '.join(no_prefix[:3])} have none. Use 'mean_all'."
        )
    if configured == "gap" and tokens:
        return "mean_all"  # average every position, as for a conv map
    return configured


def _block_pooling(blocks: list[BlockInfo], pooling: str) -> dict[str, str]:
    by_kind = {"conv_map": "gap", "vector": "none"}
    return {b.name: by_kind.get(b.kind, pooling) for b in blocks}


def _head(model: nn.Module) -> tuple[bool, int | None]:
    if isinstance(model, ImageClassifier):
        n = model.num_classes
    elif hasattr(model, "get_classifier") and isinstance(
        timm_classes := getattr(model, "num_classes", None), int
    ):
        n = timm_classes
    else:
        return False, None
    return (True, n) if n > 0 else (False, None)


def init_seed(model_id: str) -> int:
    """Return the seed of ``model_id``'s random initialisation (derived from the id).

    Whatever a build initialises randomly — a whole ``pretrained: false`` network, a new head of
    another ``num_classes`` — is drawn under this seed, so the same entry always yields the same
    weights (and weight digest, and cache content key), while differently named random
    baselines differ.
    """
    return int.from_bytes(hashlib.sha256(model_id.encode()).digest()[:8], "little") >> 1


def _models_dir(location: ProjectLocation | str | os.PathLike | None) -> Path:
    if isinstance(location, ProjectLocation):
        return location.models
    return ProjectLocation.resolve(location).models


def create_model(
    spec: ModelSpec,
    specs: Mapping[str, ModelSpec],
    *,
    device: str | torch.device = "cpu",
    location: ProjectLocation | str | os.PathLike | None = None,
) -> LoadedModel:
    """Build ``spec`` and describe it: network, eval transform, blocks, head, weight digest.

    Random initialisation (``pretrained: false``, re-sized heads) is seeded with
    :func:`init_seed` inside ``torch.random.fork_rng``, so builds are reproducible and the global
    RNG is left as it was.

    Args:
        spec: the entry to build.
        specs: the whole models config (checkpoints and variants resolve references in it).
        device: where the model runs (the dummy forward pass included). ``"meta"`` builds the
            architecture without weights and without allocating them (``--list_blocks``):
            checkpoints and variants use their architecture entry's head, ``weights_sha256`` is
            empty, and the model cannot compute features.
        location: the project root (a :class:`ProjectLocation`, or a path; ``None``: the
            ``SIMC_ROOT`` / checkout ``project_root`` default); variants are read from its ``models/``.

    Returns:
        The :class:`LoadedModel`.

    Raises:
        ConfigError: unknown source, blocks that cannot be found, pooling that does not fit.
        MissingInputError: a checkpoint file or materialised variant is missing.
        WeightsNotFoundError: pretrained weights are neither cached nor downloadable.
    """
    if spec.source not in MODEL_SOURCES:
        raise ConfigError(
            f"models config entry '{spec.model_id}': unknown source {spec.source!r}. Valid: "
            f"{', '.join(sorted(MODEL_SOURCES))}."
        )
    device = torch.device(device)
    is_meta = device.type == "meta"
    build_spec = weightless_spec(spec, specs) if is_meta else spec
    with (
        torch.random.fork_rng(devices=[]),  # seeded init; the caller's RNG is untouched
        torch.device("meta") if is_meta else contextlib.nullcontext(),
    ):
        torch.manual_seed(init_seed(spec.model_id))
        built = MODEL_SOURCES[build_spec.source](
            build_spec, specs, models_dir=_models_dir(location)
        )
    model = built.model.eval()
    weights_sha256 = "" if is_meta else state_dict_sha256(model.state_dict())
    model = model.to(device)

    blocks_option = inherited_option(spec, specs, "blocks")
    try:
        family: str | None = detect_family(model)
    except ConfigError:
        if blocks_option is None:
            raise
        family = None
    names = find_block_names(model, blocks_option)
    module_name = inherited_option(spec, specs, "module_name")
    _check_module(spec.model_id, model, module_name)
    measured = names + ([module_name] if module_name and module_name not in names else [])
    infos = describe_blocks(model, measured, built.preprocessing["input_size"], device)
    rep2rep = None
    if module_name is not None:
        token = inherited_option(spec, specs, "token_extraction")
        (info,) = [i for i in infos if i.name == module_name]
        rep2rep = _rep2rep_block(spec.model_id, module_name, token, info.shape)
        infos = [i for i in infos if i.name in names]
    alignment = inherited_option(spec, specs, "alignment")
    if alignment is not None and not is_meta:
        raise ConfigError(
            f"models config entry '{spec.model_id}': alignment {alignment!r} (Rep2Rep's gLocal "
            "transform) is not supported: its features would be silently unaligned. Remove "
            "'alignment' (or the entry), or extract the aligned features with Rep2Rep and "
            "import them with python scripts/import_rep2rep.py."
        )
    pooling = _resolve_pooling(spec.model_id, inherited_option(spec, specs, "pooling"), infos)
    has_head, n_classes = (True, built.n_classes) if built.n_classes else _head(model)
    return LoadedModel(
        model_id=spec.model_id,
        model=model,
        transform=built.transform,
        preprocessing=built.preprocessing,
        family=family,
        block_names=[info.name for info in infos],
        blocks=infos,
        has_head=has_head,
        n_classes=n_classes,
        weights_sha256=weights_sha256,
        recipe=spec.recipe(),
        pooling=pooling,
        block_pooling=_block_pooling(infos, pooling),
        device=device,
        arch_id=built.arch_id,
        rep2rep=rep2rep,
    )


def _check_module(model_id: str, model: nn.Module, module_name: str | None) -> None:
    if module_name is None:
        return
    names = [name for name, _ in model.named_modules() if name]
    if module_name not in names:
        import difflib

        close = difflib.get_close_matches(module_name, names, n=3)
        raise ConfigError(
            f"models config entry '{model_id}': module_name {module_name!r} is not a module of "
            f"{type(model).__name__}"
            + (f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ".")
            + " It must name the module whose output Rep2Rep used."
        )


def _rep2rep_block(
    model_id: str, module_name: str, token: str | None, shape: tuple[int, ...]
) -> Rep2RepBlock:
    """The representation's width from the module's raw output shape (as thingsvision reduces)."""
    if len(shape) > 2 and token is not None:
        if len(shape) != 3:
            raise ConfigError(
                f"models config entry '{model_id}': token_extraction {token!r} takes tokens "
                f"(batch, tokens, d), but {module_name!r} outputs shape {shape}. Remove "
                "token_extraction (the output is then flattened) or choose a token module."
            )
        dim = 2 * shape[2] if token == "cls_token+avg_pool" else shape[2]
    else:
        dim = int(math.prod(shape[1:]))
    return Rep2RepBlock(module_name, token, dim, shape)


def forward_logits(loaded: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    """Return the classifier logits ``(n, n_classes)`` for a preprocessed batch ``x``.

    Raises:
        ConfigError: the model has no classification head.
    """
    if not loaded.has_head:
        raise ConfigError(
            f"{loaded.model_id}: has no classification head (got n_classes None), so it has no "
            "logits. Set num_classes for a timm entry, or use a checkpoint with a head."
        )
    with torch.inference_mode():
        return loaded.model(x.to(loaded.device))
