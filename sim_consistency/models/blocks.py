"""Which modules of a network are its blocks, and what their outputs look like.

This module owns the single family table, :data:`BLOCK_FAMILIES`: for every architecture family
we analyse, the regex that recognises it and the regex that names its blocks (module names as
``model.named_modules()`` yields them, in forward order). Everything else about a block — conv
map or tokens, layout, width, number of class/register tokens — is *measured* by
:func:`describe_blocks` from one dummy forward pass, never read from the table, so a family whose
blocks surprise us fails loudly instead of being pooled wrongly.

Module names may sit under a tower prefix: ``visual.`` (an open_clip visual tower wrapped in
:class:`~sim_consistency.models.classifier.ImageClassifier`) and/or ``trunk.`` (a timm trunk
inside an open_clip ``TimmModel``).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from sim_consistency.errors import ConfigError

__all__ = [
    "BLOCK_FAMILIES",
    "BlockFamily",
    "BlockInfo",
    "describe_blocks",
    "detect_family",
    "find_block_names",
    "n_prefix_tokens",
]

BlockKind = Literal["conv_map", "tokens", "vector"]
BlockLayout = Literal["nchw", "nhwc", "nld", "lnd", "nd"]


@dataclass(frozen=True)
class BlockFamily:
    """How to recognise one architecture family and name its blocks.

    Attributes:
        marker: regex fully matching a module name that only this family has (the family is
            detected when any module matches it).
        blocks: regex fully matching the family's block names; ``named_modules`` yields them in
            registration order, which for these families is forward order.
        description: the layout in words, for error messages and docs.
        types: when set, marker and block modules must also be of one of these classes (by
            class name): torchvision's ``features.i.j`` layout is shared by several families.
        no_prefix: regex of blocks whose tokens carry no class/register token even though the
            model has some (XCiT's ``blocks.i`` run before the class token is appended).
    """

    marker: str
    blocks: str
    description: str
    types: frozenset[str] | None = None
    no_prefix: str | None = None


#: The family table, most specific first: :func:`detect_family` returns the first family whose
#: marker matches (a ViT's ``blocks.i`` pattern would also match EfficientNet's stages).
BLOCK_FAMILIES: dict[str, BlockFamily] = {
    "torchvision_vit": BlockFamily(
        marker=r"encoder\.layers\.encoder_layer_\d+",
        blocks=r"encoder\.layers\.encoder_layer_\d+",
        description="torchvision VisionTransformer: encoder.layers.encoder_layer_i",
    ),
    "torchvision_convnext": BlockFamily(
        marker=r"features\.\d+\.\d+",
        blocks=r"features\.\d+\.\d+",
        description="torchvision ConvNeXt: features.s.j (CNBlock)",
        types=frozenset({"CNBlock"}),
    ),
    "torchvision_efficientnet": BlockFamily(
        marker=r"features\.\d+(?:\.\d+)?",
        blocks=r"features\.\d+(?:\.\d+)?",
        description="torchvision EfficientNet / MobileNet: features.s.j or features.i (MBConv, "
        "InvertedResidual)",
        types=frozenset({"MBConv", "FusedMBConv", "InvertedResidual"}),
    ),
    "torchvision_swin": BlockFamily(
        marker=r"features\.\d+\.\d+",
        blocks=r"features\.\d+\.\d+",
        description="torchvision Swin: features.s.j (SwinTransformerBlock)",
        types=frozenset({"SwinTransformerBlock", "SwinTransformerBlockV2"}),
    ),
    "torchvision_vgg": BlockFamily(
        marker=r"features\.\d+",
        blocks=r"features\.\d+",
        description="torchvision VGG / AlexNet: the max-pool outputs features.i",
        types=frozenset({"MaxPool2d"}),
    ),
    "hf_vit": BlockFamily(
        marker=r"(?:vision_model\.)?(?:encoder\.)?layers?\.\d+",
        blocks=r"(?:vision_model\.)?(?:encoder\.)?layers?\.\d+",
        description="Hugging Face ViT / DeiT / DINOv2 / BEiT / CLIP / SigLIP vision encoders: "
        "layers.i, encoder.layer.i, encoder.layers.i",
        types=frozenset(
            {
                "ViTLayer",
                "ViTMAELayer",
                "ViTMSNLayer",
                "DeiTLayer",
                "Dinov2Layer",
                "Dinov2WithRegistersLayer",
                "BeitLayer",
                "Data2VecVisionLayer",
                "CLIPEncoderLayer",
                "SiglipEncoderLayer",
                "Siglip2EncoderLayer",
            }
        ),
    ),
    "xcit": BlockFamily(
        marker=r"cls_attn_blocks\.\d+",
        blocks=r"blocks\.\d+|cls_attn_blocks\.\d+",
        description="timm XCiT: blocks.i, then cls_attn_blocks.j",
        no_prefix=r"blocks\.\d+",
    ),
    "swin": BlockFamily(
        marker=r"layers\.\d+\.blocks\.\d+",
        blocks=r"layers\.\d+\.blocks\.\d+",
        description="timm Swin: layers.s.blocks.j",
    ),
    "open_clip_vit": BlockFamily(
        marker=r"transformer\.resblocks\.\d+",
        blocks=r"transformer\.resblocks\.\d+",
        description="open_clip VisionTransformer: transformer.resblocks.i",
    ),
    "open_clip_resnet": BlockFamily(
        marker=r"attnpool",
        blocks=r"layer[1-4]\.\d+",
        description="open_clip ModifiedResNet: layerK.j",
    ),
    "convnext": BlockFamily(
        marker=r"stages\.\d+\.blocks\.\d+",
        blocks=r"stages\.\d+\.blocks\.\d+",
        description="timm ConvNeXt-like: stages.s.blocks.j",
    ),
    "efficientnet": BlockFamily(
        marker=r"blocks\.\d+\.\d+",
        blocks=r"blocks\.\d+\.\d+",
        description="timm EfficientNet / MobileNet: blocks.i.j",
    ),
    "vit": BlockFamily(
        marker=r"blocks\.\d+",
        blocks=r"blocks\.\d+",
        description="timm ViT-like: blocks.i",
    ),
    "resnet": BlockFamily(
        marker=r"layer1\.\d+",
        blocks=r"layer[1-4]\.\d+",
        description="timm ResNet: layerK.j",
    ),
}

#: Optional prefixes in front of a family's module names (wrapped or nested towers).
_TOWER_PREFIX = r"(?:visual\.)?(?:trunk\.)?"


@dataclass(frozen=True)
class BlockInfo:
    """What one block outputs, measured on a dummy batch.

    Attributes:
        name: module name (``model.get_submodule(name)``).
        kind: ``conv_map`` (spatial feature map), ``tokens`` (a token sequence) or ``vector``
            (one vector per image).
        layout: axis order of the output: ``nchw`` / ``nhwc`` for maps, ``nld`` (batch first)
            / ``lnd`` (sequence first) for tokens, ``nd`` for vectors.
        dim: channels (maps) or width (tokens, vectors).
        spatial: ``(h, w)`` of a conv map, else ``None``.
        n_tokens: sequence length of tokens (prefix tokens included), else ``None``.
        n_prefix_tokens: class + register tokens at the start of the sequence (0 for maps).
        shape: the hooked output's shape, dummy batch axis (size 2) included.
    """

    name: str
    kind: BlockKind
    layout: BlockLayout
    dim: int
    spatial: tuple[int, int] | None
    n_tokens: int | None
    n_prefix_tokens: int
    shape: tuple[int, ...]


# -- finding blocks -----------------------------------------------------------------------------


def _module_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def _family_matches(model: nn.Module, entry: BlockFamily, regex: str) -> list[str]:
    """Module names fully matching ``regex`` (after a tower prefix) and of ``entry.types``."""
    pattern = re.compile(_TOWER_PREFIX + regex)
    return [
        name
        for name, module in model.named_modules()
        if name
        and pattern.fullmatch(name)
        and (entry.types is None or type(module).__name__ in entry.types)
    ]


def detect_family(model: nn.Module) -> str:
    """Return the :data:`BLOCK_FAMILIES` key of ``model``'s architecture.

    Raises:
        ConfigError: no family matches; the message says how to name blocks by hand.
    """
    names = _module_names(model)
    for family, entry in BLOCK_FAMILIES.items():
        if _family_matches(model, entry, entry.marker):
            return family
    top = [name for name in names if "." not in name][:12]
    raise ConfigError(
        f"{type(model).__name__}: no known block family matches this model (got top-level "
        f"modules {', '.join(top) or 'none'}). Known families: "
        + "; ".join(f"{k} ({v.description})" for k, v in BLOCK_FAMILIES.items())
        + '. Name the blocks in the models config, e.g. "blocks": "layers\\\\.\\\\d+" (a regex '
        'fully matching module names) or "blocks": ["stem", "layers.0"].'
    )


def _example_names(model: nn.Module, n: int = 10) -> str:
    """A few module names, one per name pattern (digits collapsed), shallow containers first."""
    seen: dict[str, str] = {}
    for name, module in model.named_modules():
        if not name or name.count(".") > 3:
            continue
        if "." in name and not any(True for _ in module.children()):
            continue  # nested leaves (norms, activations) are rarely what anyone wants
        seen.setdefault(re.sub(r"\d+", "N", name), name)
    return ", ".join(list(seen.values())[:n])


def find_block_names(model: nn.Module, blocks: str | Sequence[str] | None = None) -> list[str]:
    """Return the names of the modules whose outputs are recorded, in registration order.

    Args:
        model: the network whose blocks are wanted.
        blocks: ``None`` for every block of the model's family (:data:`BLOCK_FAMILIES`); a
            regex string selecting every module whose full name matches it; or explicit module
            names (kept in the given order).

    Returns:
        Module names; for the family default and regexes in ``named_modules`` order, which
        :func:`describe_blocks` then checks against the actual forward order.

    Raises:
        ConfigError: no family is detected, the regex matches nothing, or a named module does
            not exist.
    """
    names = _module_names(model)
    if blocks is None:
        entry = BLOCK_FAMILIES[detect_family(model)]
        return _family_matches(model, entry, entry.blocks)
    if isinstance(blocks, str):
        try:
            pattern = re.compile(blocks)
        except re.error as exc:
            raise ConfigError(f"blocks: regex {blocks!r} does not compile ({exc}).") from exc
        found = [name for name in names if pattern.fullmatch(name)]
        if not found:
            raise ConfigError(
                f"blocks: regex {blocks!r} fully matches no module of {type(model).__name__} "
                f"(got 0 of {len(names)} module names). Module names look like: "
                f"{_example_names(model)}. The regex must match whole names, e.g. "
                "'blocks\\.\\d+'."
            )
        return found
    known = set(names)
    for name in blocks:
        if name not in known:
            close = difflib.get_close_matches(name, names, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"blocks: {type(model).__name__} has no module named {name!r}.{hint} "
                f"Module names look like: {_example_names(model)}."
            )
    return list(dict.fromkeys(blocks))


# -- measuring blocks ---------------------------------------------------------------------------


def n_prefix_tokens(model: nn.Module) -> int:
    """Return how many class/register tokens precede the patch tokens in ``model``'s blocks.

    timm models say so in ``num_prefix_tokens``; an open_clip visual transformer (and Hugging
    Face CLIP) prepends one class token when it has a ``class_embedding``; torchvision's ViT has
    a ``class_token``, Hugging Face ViT-likes a ``cls_token`` (plus ``register_tokens`` when they
    have them). The model itself and its ``visual`` / ``trunk`` / ``vision_model`` /
    ``embeddings`` children are searched, in that order; anything else has none.
    """
    candidates = [model]
    for attr in ("visual", "trunk", "vision_model", "embeddings"):
        for module in list(candidates):
            child = getattr(module, attr, None)
            if isinstance(child, nn.Module):
                candidates.append(child)
    for module in candidates:
        count = getattr(module, "num_prefix_tokens", None)
        if isinstance(count, int) and not isinstance(count, bool):
            return count
        if getattr(module, "class_embedding", None) is not None:
            return 1
        for attr in ("class_token", "cls_token"):
            if isinstance(getattr(module, attr, None), torch.Tensor):
                registers = getattr(module, "register_tokens", None)
                extra = int(registers.shape[1]) if isinstance(registers, torch.Tensor) else 0
                return 1 + extra
    return 0


def _first_tensor(output: object) -> torch.Tensor | None:
    """The block's output tensor: itself, or the first tensor of a tuple/list/dict."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list):
        for item in output:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(output, dict):
        for item in output.values():
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _ancestor_batch_first(model: nn.Module, name: str) -> bool | None:
    """``batch_first`` of the nearest ancestor module that declares it (open_clip towers)."""
    parts = name.split(".")
    for depth in range(len(parts) - 1, -1, -1):
        module = model.get_submodule(".".join(parts[:depth]))
        flag = getattr(module, "batch_first", None)
        if isinstance(flag, bool):
            return flag
    return None


def _map_layout(shape: tuple[int, ...], input_hw: tuple[int, int]) -> BlockLayout:
    """``nchw`` or ``nhwc`` for a 4-d output, from which axes keep the input's aspect ratio."""
    _, a, b, c = shape
    h_in, w_in = input_hw
    nchw_fits = b * w_in == c * h_in  # (h, w) = (b, c) keeps the aspect ratio
    nhwc_fits = a * w_in == b * h_in  # (h, w) = (a, b)
    if nhwc_fits and not nchw_fits:
        return "nhwc"
    return "nchw"  # also the tie-break (channels equal to the spatial size): torch convention


def _token_layout(model: nn.Module, name: str, shape: tuple[int, ...], batch: int) -> BlockLayout:
    first, second = shape[0], shape[1]
    if first == batch and second != batch:
        return "nld"
    if second == batch and first != batch:
        return "lnd"
    batch_first = _ancestor_batch_first(model, name)
    return "lnd" if batch_first is False else "nld"


def describe_blocks(
    model: nn.Module,
    block_names: Sequence[str],
    input_size: Sequence[int],
    device: str | torch.device = "cpu",
) -> list[BlockInfo]:
    """Return what each block outputs, measured with one dummy forward pass, in forward order.

    One batch of two all-zero images runs through ``model`` with forward hooks on the blocks
    (in eval mode, restored afterwards, so batch-norm statistics are not touched). Each block's
    kind and layout are inferred from its output shape: 4-d outputs are conv maps (``nchw``
    unless only ``nhwc`` keeps the input's aspect ratio), 3-d outputs are tokens (batch-first
    unless the batch axis is second; an ancestor's ``batch_first`` breaks ties), 2-d outputs
    are vectors. Tuple outputs contribute their first tensor.

    Args:
        model: the network, on ``device``.
        block_names: modules to describe (see :func:`find_block_names`).
        input_size: ``(channels, height, width)`` of one input image.
        device: where the dummy batch is created.

    Returns:
        One :class:`BlockInfo` per block, sorted by when the block first ran in the forward
        pass.

    Raises:
        ConfigError: a block does not exist, never runs, or outputs something that is neither a
            conv map, tokens nor vectors.
    """
    if not block_names:
        raise ConfigError(f"{type(model).__name__}: no blocks to describe (got an empty list).")
    modules = dict(model.named_modules())
    missing = [name for name in block_names if name not in modules]
    if missing:
        raise ConfigError(f"{type(model).__name__}: no module named {missing[0]!r}.")
    batch = 2
    outputs: dict[str, torch.Tensor | None] = {}
    call_order: list[str] = []

    def make_hook(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if name not in outputs:
                call_order.append(name)
                tensor = _first_tensor(output)
                outputs[name] = None if tensor is None else tensor.detach()

        return hook

    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = param.dtype if param is not None else torch.float32
    handles = [modules[name].register_forward_hook(make_hook(name)) for name in block_names]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(batch, *input_size, dtype=dtype, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    never_ran = [name for name in block_names if name not in outputs]
    if never_ran:
        raise ConfigError(
            f"{type(model).__name__}: block(s) {', '.join(never_ran)} never ran in a forward "
            f"pass on input {tuple(input_size)}; choose modules the forward pass uses."
        )
    prefix = n_prefix_tokens(model)
    no_prefix = _no_prefix_pattern(model)
    input_hw = (int(input_size[-2]), int(input_size[-1]))
    infos = []
    for name in call_order:
        tensor = outputs[name]
        if tensor is None:
            raise ConfigError(
                f"{type(model).__name__}: block {name!r} returns no tensor; choose a module that "
                "outputs a feature map or tokens."
            )
        block_prefix = 0 if no_prefix is not None and no_prefix.fullmatch(name) else prefix
        infos.append(_block_info(model, name, tensor, batch, input_hw, block_prefix))
    return infos


def _no_prefix_pattern(model: nn.Module) -> re.Pattern[str] | None:
    """The family's ``no_prefix`` regex (tower prefix included), if it has one."""
    try:
        family = BLOCK_FAMILIES[detect_family(model)]
    except ConfigError:
        return None
    return re.compile(_TOWER_PREFIX + family.no_prefix) if family.no_prefix else None


def _block_info(
    model: nn.Module,
    name: str,
    tensor: torch.Tensor,
    batch: int,
    input_hw: tuple[int, int],
    prefix: int,
) -> BlockInfo:
    shape = tuple(int(s) for s in tensor.shape)
    if tensor.ndim == 4 and shape[0] == batch:
        layout = _map_layout(shape, input_hw)
        dim, spatial = (
            (shape[1], (shape[2], shape[3]))
            if layout == "nchw"
            else (shape[3], (shape[1], shape[2]))
        )
        return BlockInfo(name, "conv_map", layout, dim, spatial, None, 0, shape)
    if tensor.ndim == 3 and batch in shape[:2]:
        layout = _token_layout(model, name, shape, batch)
        n_tokens = shape[1] if layout == "nld" else shape[0]
        if prefix >= n_tokens:
            prefix = 0  # a pooled or resampled sequence (e.g. attention pooling) has no prefix
        return BlockInfo(name, "tokens", layout, shape[2], None, n_tokens, prefix, shape)
    if tensor.ndim == 2 and shape[0] == batch:
        return BlockInfo(name, "vector", "nd", shape[1], None, None, 0, shape)
    raise ConfigError(
        f"{type(model).__name__}: block {name!r} outputs shape {shape} for a batch of {batch}; "
        "expected a conv map (n, c, h, w), tokens (n, l, d) / (l, n, d) or vectors (n, d). "
        "Choose other modules with the 'blocks' key."
    )
