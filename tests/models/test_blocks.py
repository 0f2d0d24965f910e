"""Block discovery and description (sim_consistency/models/blocks.py) on tiny real networks."""

from __future__ import annotations

import re

import open_clip
import pytest
import timm
import torch
from open_clip.transformer import Transformer
from torch import nn

from sim_consistency.errors import ConfigError
from sim_consistency.models import (
    BLOCK_FAMILIES,
    ImageClassifier,
    describe_blocks,
    detect_family,
    find_block_names,
    n_prefix_tokens,
    state_dict_sha256,
)


def _timm(name: str) -> nn.Module:
    return timm.create_model(name, pretrained=False).eval()


def _open_clip_visual(name: str) -> nn.Module:
    model = open_clip.create_model(name, pretrained=None, pretrained_text=False)
    return ImageClassifier(model.visual).eval()


def _expected_blocks(name: str, model: nn.Module) -> list[str]:
    """Block names written out from each architecture's own structure."""
    if name == "test_vit":
        return [f"blocks.{i}" for i in range(len(model.blocks))]
    if name == "test_convnext":
        return [
            f"stages.{s}.blocks.{j}"
            for s, stage in enumerate(model.stages)
            for j in range(len(stage.blocks))
        ]
    if name == "test_resnet":
        return [
            f"layer{k}.{j}" for k in range(1, 5) for j in range(len(getattr(model, f"layer{k}")))
        ]
    if name == "test_efficientnet":
        return [
            f"blocks.{i}.{j}" for i, stage in enumerate(model.blocks) for j in range(len(stage))
        ]
    raise AssertionError(name)


def _call_order(model: nn.Module, names: list[str], input_size: tuple[int, ...]) -> list[str]:
    """Module names in the order their forward hooks fire (first call each)."""
    order: list[str] = []
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(
            lambda _m, _i, _o, name=name: order.append(name) if name not in order else None
        )
        for name in names
    ]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *input_size))
    finally:
        for handle in handles:
            handle.remove()
    return order


TIMM_FAMILIES = {
    "test_vit": "vit",
    "test_convnext": "convnext",
    "test_resnet": "resnet",
    "test_efficientnet": "efficientnet",
}


@pytest.mark.parametrize("name", sorted(TIMM_FAMILIES))
def test_timm_blocks_match_architecture_in_forward_order(name: str) -> None:
    model = _timm(name)
    names = find_block_names(model)
    assert detect_family(model) == TIMM_FAMILIES[name]
    assert names == _expected_blocks(name, model)
    assert _call_order(model, names, (3, 160, 160)) == names
    if name == "test_vit":
        assert len(names) == len(model.blocks) == 6  # test_vit has depth 6


@pytest.mark.parametrize("name", ["simc-tiny-vit", "simc-tiny-rn"])
def test_open_clip_blocks_match_architecture_in_forward_order(tiny_open_clip, name: str) -> None:
    model = _open_clip_visual(name)
    vision_cfg = tiny_open_clip[name]["vision_cfg"]
    size = vision_cfg["image_size"]
    names = find_block_names(model)
    if name == "simc-tiny-vit":
        assert detect_family(model) == "open_clip_vit"
        assert names == [f"visual.transformer.resblocks.{i}" for i in range(vision_cfg["layers"])]
    else:
        assert detect_family(model) == "open_clip_resnet"
        assert names == [
            f"visual.layer{k}.{j}" for k in range(1, 5) for j in range(vision_cfg["layers"][k - 1])
        ]
    assert _call_order(model, names, (3, size, size)) == names


def test_every_family_entry_is_well_formed() -> None:
    for family, entry in BLOCK_FAMILIES.items():
        re.compile(entry.marker)
        re.compile(entry.blocks)
        assert entry.description, family


def test_vit_block_info_tokens_with_class_token() -> None:
    model = _timm("test_vit")
    infos = describe_blocks(model, find_block_names(model), (3, 160, 160))
    n_patches = (160 // 16) ** 2
    assert model.num_prefix_tokens == 1
    for info in infos:
        assert (info.kind, info.layout, info.dim) == ("tokens", "nld", model.embed_dim)
        assert info.n_tokens == n_patches + 1
        assert info.n_prefix_tokens == 1
        assert info.shape == (2, n_patches + 1, model.embed_dim)
        assert info.spatial is None


@pytest.mark.parametrize("name", ["test_convnext", "test_resnet", "test_efficientnet"])
def test_conv_block_info_is_nchw_map(name: str) -> None:
    model = _timm(name)
    infos = describe_blocks(model, find_block_names(model), (3, 160, 160))
    for info in infos:
        assert (info.kind, info.layout, info.n_prefix_tokens, info.n_tokens) == (
            "conv_map",
            "nchw",
            0,
            None,
        )
        assert info.shape == (2, info.dim, *info.spatial)


def test_open_clip_block_info(tiny_open_clip) -> None:
    model = _open_clip_visual("simc-tiny-vit")
    infos = describe_blocks(model, find_block_names(model), (3, 32, 32))
    assert n_prefix_tokens(model) == 1  # the class embedding
    assert [(i.kind, i.layout, i.dim, i.n_tokens, i.n_prefix_tokens) for i in infos] == [
        ("tokens", "nld", 64, 5, 1)
    ] * 2


def test_regex_selection_full_match_in_registration_order() -> None:
    model = _timm("test_vit")
    assert find_block_names(model, r"blocks\.[0-2]") == ["blocks.0", "blocks.1", "blocks.2"]
    assert find_block_names(model, r"blocks\.\d+\.mlp") == [f"blocks.{i}.mlp" for i in range(6)]


def test_regex_matching_nothing_names_regex_and_examples() -> None:
    model = _timm("test_convnext")
    with pytest.raises(ConfigError) as info:
        find_block_names(model, r"layers\.\d+")
    message = str(info.value)
    assert "'layers\\\\.\\\\d+'" in message or r"layers\.\d+" in message
    assert "stages.0" in message  # example module names


def test_explicit_names_checked_and_described_in_forward_order() -> None:
    model = _timm("test_vit")
    names = find_block_names(model, ("blocks.3", "blocks.1"))
    assert names == ["blocks.3", "blocks.1"]
    infos = describe_blocks(model, names, (3, 160, 160))
    assert [i.name for i in infos] == ["blocks.1", "blocks.3"]
    with pytest.raises(ConfigError, match=r"no module named 'blocks\.60'.*Did you mean"):
        find_block_names(model, ("blocks.0", "blocks.60"))


def test_unknown_family_asks_for_blocks_key() -> None:
    model = _timm("test_byobnet")
    with pytest.raises(ConfigError, match="blocks"):
        detect_family(model)
    names = find_block_names(model, r"stages\.\d+")
    assert [i.kind for i in describe_blocks(model, names, (3, 160, 160))] == ["conv_map"] * 4


def test_vector_outputs_and_blocks_that_never_run() -> None:
    model = _timm("test_vit")
    (info,) = describe_blocks(model, ["fc_norm"], (3, 160, 160))
    assert (info.kind, info.layout, info.dim) == ("vector", "nd", model.embed_dim)
    model.head_drop.forward = lambda x: x  # not a block: just make sure the model still runs
    unused = nn.Linear(2, 2)
    model.add_module("unused", unused)
    with pytest.raises(ConfigError, match="never ran"):
        describe_blocks(model, ["blocks.0", "unused"], (3, 160, 160))


class _TupleBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return self.conv(x), {"aux": 1}


class _TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = _TupleBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)[0].mean()


def test_tuple_output_uses_first_tensor() -> None:
    (info,) = describe_blocks(_TupleNet(), ["block"], (3, 12, 12))
    assert (info.kind, info.layout, info.dim, info.spatial) == ("conv_map", "nchw", 8, (12, 12))


class _ChannelsLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class _NhwcNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 5, 4, stride=4)
        self.to_nhwc = _ChannelsLast()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_nhwc(self.stem(x))


def test_channels_last_map_is_nhwc() -> None:
    (info,) = describe_blocks(_NhwcNet(), ["to_nhwc"], (3, 16, 32))
    assert (info.layout, info.dim, info.spatial) == ("nhwc", 5, (4, 8))


class _SeqFirstViT(nn.Module):
    """A ViT whose open_clip Transformer runs sequence-first (batch_first=False)."""

    def __init__(self, patch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, patch, stride=patch)
        self.class_embedding = nn.Parameter(torch.zeros(16))
        self.transformer = Transformer(width=16, layers=2, heads=2, batch_first=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        return self.transformer(torch.cat([cls, x], dim=1))[:, 0]


@pytest.mark.parametrize("patch,n_tokens", [(8, 5), (16, 2)])  # (16, 2): ties with the batch
def test_sequence_first_transformer_is_lnd(patch: int, n_tokens: int) -> None:
    model = _SeqFirstViT(patch).eval()
    assert detect_family(model) == "open_clip_vit"
    infos = describe_blocks(model, find_block_names(model), (3, 16, 16))
    assert [(i.layout, i.n_tokens, i.n_prefix_tokens) for i in infos] == [("lnd", n_tokens, 1)] * 2


def test_describe_blocks_leaves_weights_and_mode_untouched() -> None:
    model = _timm("test_resnet").train()
    before = state_dict_sha256(model.state_dict())
    describe_blocks(model, find_block_names(model), (3, 64, 64))
    assert model.training
    assert state_dict_sha256(model.state_dict()) == before  # batch-norm stats not updated


@pytest.mark.parametrize(
    ("name", "family", "n_blocks"),
    [("xcit_nano_12_p16_224", "xcit", 14), ("swin_tiny_patch4_window7_224", "swin", 12)],
)
def test_xcit_and_swin_families_run_with_random_weights(name, family, n_blocks) -> None:
    """XCiT's blocks carry no class token until its class-attention blocks; Swin's are maps."""
    import timm

    from sim_consistency.models import describe_blocks, detect_family, find_block_names

    model = timm.create_model(name, pretrained=False).eval()
    assert detect_family(model) == family
    names = find_block_names(model)
    infos = describe_blocks(model, names, (3, 224, 224))
    assert len(infos) == n_blocks
    if family == "xcit":
        assert {i.n_prefix_tokens for i in infos if i.name.startswith("blocks.")} == {0}
        assert {i.n_prefix_tokens for i in infos if i.name.startswith("cls_attn")} == {1}
        assert infos[0].n_tokens == 196 and infos[-1].n_tokens == 197
    else:
        assert {i.kind for i in infos} == {"conv_map"} and infos[0].layout == "nhwc"
