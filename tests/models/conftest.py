"""Fixtures of the models tests: tiny real timm / open_clip networks, no downloads."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from sim_consistency.config import ModelSpec, parse_models_config


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
