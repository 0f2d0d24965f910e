"""Fixtures of the models tests: tiny real timm / open_clip networks, no downloads."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from sim_consistency.config import ModelSpec, parse_models_config

#: Tiny open_clip configs registered for the tests: a 2-layer ViT and a ModifiedResNet.
TINY_OPEN_CLIP_CONFIGS: dict[str, dict[str, Any]] = {
    "simc-tiny-vit": {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 64,
            "patch_size": 16,
            "head_width": 32,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    },
    "simc-tiny-rn": {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 64,
            "layers": [1, 1, 1, 1],
            "width": 16,
            "patch_size": None,
            "head_width": 32,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    },
}


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Register the tiny open_clip configs (open_clip.add_model_config) and return them."""
    import open_clip

    folder = tmp_path_factory.mktemp("open_clip_configs")
    for name, config in TINY_OPEN_CLIP_CONFIGS.items():
        (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return TINY_OPEN_CLIP_CONFIGS


@pytest.fixture
def make_specs(tmp_path: Path) -> Callable[[Mapping[str, Any]], dict[str, ModelSpec]]:
    """Validate a models config dict (relative paths resolved against ``tmp_path``)."""

    def make(raw: Mapping[str, Any]) -> dict[str, ModelSpec]:
        return parse_models_config(dict(raw), source_name="test config", base_dir=tmp_path)

    return make


@pytest.fixture
def hub_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Hugging Face home under ``tmp_path`` (HF_HOME set, cache overrides unset)."""
    home = tmp_path / "hf_home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    return home
