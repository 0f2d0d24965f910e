"""The model factory (sim_consistency/models/factory.py): what a LoadedModel tells a stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sim_consistency.errors import ConfigError
from sim_consistency.models import (
    LoadedModel,
    create_model,
    default_pooling,
    forward_logits,
    state_dict_sha256,
)


def _image(size: tuple[int, int] = (200, 180)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8))


def test_loaded_vit_describes_itself(make_specs) -> None:
    specs = make_specs({"vit": {"source": "timm", "model_name": "test_vit", "num_classes": 10}})
    loaded = create_model(specs["vit"], specs)
    assert isinstance(loaded, LoadedModel)
    assert (loaded.model_id, loaded.family, loaded.arch_id) == ("vit", "vit", "vit")
    assert loaded.block_names == [f"blocks.{i}" for i in range(6)]
    assert [b.name for b in loaded.blocks] == loaded.block_names
    assert (loaded.has_head, loaded.n_classes) == (True, 10)
    assert loaded.pooling == "cls"
    assert set(loaded.block_pooling.values()) == {"cls"}
    assert loaded.recipe == specs["vit"].recipe()
    assert loaded.weights_sha256 == state_dict_sha256(loaded.model.state_dict())
    assert loaded.device == torch.device("cpu")
    pre = loaded.preprocessing
    assert json.loads(json.dumps(pre)) == pre  # JSON-able, for content keys
    assert pre["input_size"] == [3, 160, 160] and loaded.input_size == (3, 160, 160)
    assert (pre["mean"], pre["interpolation"], pre["crop_pct"]) == ([0.5] * 3, "bicubic", 0.95)
    assert pre["resize"] == 168  # floor(160 / 0.95)
    x = loaded.transform(_image())
    assert x.shape == (3, 160, 160)
    logits = forward_logits(loaded, x[None])
    assert logits.shape == (1, 10)


def test_conv_models_pool_maps_with_gap(make_specs) -> None:
    specs = make_specs({"cnx": {"source": "timm", "model_name": "test_convnext", "num_classes": 0}})
    loaded = create_model(specs["cnx"], specs)
    assert loaded.pooling == "gap"
    assert set(loaded.block_pooling.values()) == {"gap"}
    assert (loaded.has_head, loaded.n_classes) == (False, None)
    with pytest.raises(ConfigError, match="no classification head"):
        forward_logits(loaded, torch.zeros(1, *loaded.input_size))


def test_open_clip_transform_and_pooling(make_specs, tiny_open_clip) -> None:
    specs = make_specs({"clip": {"source": "open_clip", "model_name": "simc-tiny-vit"}})
    loaded = create_model(specs["clip"], specs)
    assert loaded.family == "open_clip_vit" and loaded.pooling == "cls"
    pre = loaded.preprocessing
    assert pre["library"] == "open_clip" and pre["input_size"] == [3, 32, 32]
    assert pre["resize_mode"] == "shortest" and pre["resize"] == 32
    assert loaded.transform(_image()).shape == (3, 32, 32)
    with torch.inference_mode():
        assert loaded.model(torch.zeros(2, 3, 32, 32)).shape == (2, 32)  # embed_dim


def test_img_size_override_reaches_model_and_transform(make_specs, tiny_open_clip) -> None:
    specs = make_specs(
        {
            "vit": {"source": "timm", "model_name": "test_vit", "img_size": 64},
            "cnx": {"source": "timm", "model_name": "test_convnext", "img_size": 96},
            "clip": {"source": "open_clip", "model_name": "simc-tiny-vit", "img_size": 48},
        }
    )
    vit = create_model(specs["vit"], specs)
    assert vit.preprocessing["input_size"] == [3, 64, 64]
    assert vit.blocks[0].n_tokens == (64 // 16) ** 2 + 1
    assert vit.transform(_image()).shape == (3, 64, 64)
    cnx = create_model(specs["cnx"], specs)
    assert cnx.transform(_image()).shape == (3, 96, 96)
    assert cnx.blocks[0].spatial == (24, 24)
    clip = create_model(specs["clip"], specs)
    assert clip.transform(_image()).shape == (3, 48, 48)
    assert clip.blocks[0].n_tokens == (48 // 16) ** 2 + 1


def test_blocks_and_pooling_from_the_config(make_specs) -> None:
    specs = make_specs(
        {
            "vit": {
                "source": "timm",
                "model_name": "test_vit",
                "blocks": r"blocks\.[13]",
                "pooling": "mean_patch",
            },
            "byob": {
                "source": "timm",
                "model_name": "test_byobnet",
                "blocks": ["stages.3", "stages.1"],
            },
            "cnx_cls": {"source": "timm", "model_name": "test_convnext", "pooling": "cls"},
            "byob_default": {"source": "timm", "model_name": "test_byobnet"},
        }
    )
    vit = create_model(specs["vit"], specs)
    assert vit.block_names == ["blocks.1", "blocks.3"]
    assert vit.pooling == "mean_patch"
    byob = create_model(specs["byob"], specs)
    assert byob.family is None and byob.block_names == ["stages.1", "stages.3"]
    with pytest.raises(ConfigError, match="pooling 'cls' pools tokens"):
        create_model(specs["cnx_cls"], specs)
    with pytest.raises(ConfigError, match="no known block family"):
        create_model(specs["byob_default"], specs)


def test_checkpoint_inherits_blocks_and_img_size_from_arch(tmp_path, make_specs) -> None:
    import timm

    torch.save(timm.create_model("test_vit", img_size=64).state_dict(), tmp_path / "ft.pt")
    specs = make_specs(
        {
            "vit": {
                "source": "timm",
                "model_name": "test_vit",
                "img_size": 64,
                "blocks": ["blocks.5"],
            },
            "ft": {"source": "checkpoint", "arch": "vit", "path": "ft.pt"},
        }
    )
    loaded = create_model(specs["ft"], specs)
    assert loaded.block_names == ["blocks.5"]
    assert loaded.input_size == (3, 64, 64)


def test_default_pooling_rules(make_specs) -> None:
    specs = make_specs({"vit": {"source": "timm", "model_name": "test_vit"}})
    blocks = create_model(specs["vit"], specs).blocks
    assert default_pooling(blocks) == "cls"
    no_prefix = [type(b)(**{**b.__dict__, "n_prefix_tokens": 0}) for b in blocks]
    assert default_pooling(no_prefix) == "mean_all"
    assert default_pooling([]) == "gap"


def test_random_init_is_reproducible_per_entry_and_leaves_global_rng(make_specs) -> None:
    specs = make_specs(
        {
            "rand_a": {"source": "timm", "model_name": "test_resnet", "num_classes": 3},
            "rand_b": {"source": "timm", "model_name": "test_resnet", "num_classes": 3},
        }
    )
    state = torch.random.get_rng_state()
    first = create_model(specs["rand_a"], specs).weights_sha256
    assert torch.equal(torch.random.get_rng_state(), state)
    assert create_model(specs["rand_a"], specs).weights_sha256 == first
    assert create_model(specs["rand_b"], specs).weights_sha256 != first
