"""The hf source (sim_consistency/models/sources/hf.py): transformers vision models built from a
tiny local config or the local Hugging Face cache, their blocks found, offline errors naming the
cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sim_consistency.errors import WeightsNotFoundError
from sim_consistency.models import create_model, state_dict_sha256

TINY_VIT = {
    "model_type": "vit",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": 32,
    "patch_size": 8,
}
TINY_CLIP = {
    "model_type": "clip",
    "vision_config": {
        "hidden_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "image_size": 32,
        "patch_size": 8,
    },
    "text_config": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
}
TRANSFORM = {"input_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


@pytest.mark.parametrize(
    ("config", "n_blocks", "first"), [(TINY_VIT, 2, "layers.0"), (TINY_CLIP, 3, "encoder.layers.0")]
)
def test_tiny_local_config_builds_runs_and_lists_blocks(
    tmp_path: Path, make_specs, config: dict, n_blocks: int, first: str
) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    specs = make_specs({"m": {"source": "hf", "config": "config.json", "transform": TRANSFORM}})
    loaded = create_model(specs["m"], specs)
    assert loaded.family == "hf_vit"
    assert len(loaded.block_names) == n_blocks and loaded.block_names[0] == first
    assert loaded.blocks[0].kind == "tokens" and loaded.blocks[0].n_prefix_tokens == 1
    assert loaded.pooling == "cls" and not loaded.has_head
    with torch.inference_mode():
        out = loaded.model(torch.randn(2, *loaded.input_size))
    assert out.last_hidden_state.shape == (2, 17, 32)
    again = create_model(specs["m"], specs)
    assert again.weights_sha256 == loaded.weights_sha256  # seeded random init
    assert not hasattr(loaded.model, "text_model")  # image-text models: the vision tower only


def _fake_hf_repo(cache_dir: Path, repo_id: str, files: dict[str, object]) -> Path:
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    for name, content in files.items():
        if name.endswith(".safetensors"):
            save_file(content, str(snapshot / name))
        else:
            (snapshot / name).write_text(json.dumps(content))
    return snapshot


def test_pretrained_from_the_hf_cache_and_processor_transform(
    hub_env: Path, monkeypatch: pytest.MonkeyPatch, make_specs
) -> None:
    from transformers import AutoConfig, AutoModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = dict(TINY_VIT)
    source = AutoModel.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg))
    processor = {
        "do_resize": True,
        "size": {"height": 32, "width": 32},
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "resample": 2,
    }
    _fake_hf_repo(
        hub_env / "hub",
        "tiny/vit",
        {
            "config.json": TINY_VIT,
            "model.safetensors": {k: v.contiguous() for k, v in source.state_dict().items()},
            "preprocessor_config.json": processor,
        },
    )
    specs = make_specs({"m": {"source": "hf", "model_name": "tiny/vit"}})
    loaded = create_model(specs["m"], specs)
    assert loaded.weights_sha256 == state_dict_sha256(source.state_dict())
    assert loaded.preprocessing["input_size"] == [3, 32, 32]
    assert loaded.preprocessing["resize"] == [32, 32]  # the processor squashes, no crop
    assert loaded.preprocessing["interpolation"] == "bilinear"


def test_offline_hf_error_names_the_cache(hub_env: Path, monkeypatch, make_specs) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    specs = make_specs({"m": {"source": "hf", "model_name": "facebook/dinov2-small"}})
    with pytest.raises(WeightsNotFoundError) as excinfo:
        create_model(specs["m"], specs)
    message = str(excinfo.value)
    assert "facebook/dinov2-small" in message and str(hub_env / "hub") in message
    assert "'m'" in message
