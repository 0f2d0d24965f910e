"""Shipped configs: one copy (package data), found by name, the repository's configs/ points at it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sim_consistency.config.model_sets import load_model_sets
from sim_consistency.config.models import load_models_config
from sim_consistency.config.shipped import (
    SHIPPED_KINDS,
    shipped_config,
    shipped_config_dir,
    shipped_names,
)
from sim_consistency.config.similarity import load_similarity_config
from sim_consistency.data.resolve import read_dataset_list
from sim_consistency.errors import ConfigError, MissingInputError
from sim_consistency.launch.slurm_config import load_slurm_config, resolve_slurm_config_path
from sim_consistency.stages import demo

REPO = Path(__file__).resolve().parents[2]
PACKAGE_CONFIGS = REPO / "sim_consistency" / "configs"


def test_repository_configs_is_a_link_to_the_package_data():
    """configs/ cannot drift from what is installed: it is the package's folder under another name."""
    link = REPO / "configs"
    assert link.is_symlink(), "configs/ must be a symlink to sim_consistency/configs"
    assert os.readlink(link) == "sim_consistency/configs"  # relative: survives clones and copies
    assert link.resolve() == PACKAGE_CONFIGS.resolve()
    assert not PACKAGE_CONFIGS.is_symlink()


def test_the_package_finds_its_configs_with_importlib_resources():
    assert {p.name for p in PACKAGE_CONFIGS.iterdir() if p.is_dir()} == set(SHIPPED_KINDS)
    for kind, suffix in SHIPPED_KINDS.items():
        assert shipped_config_dir(kind).resolve() == (PACKAGE_CONFIGS / kind).resolve()
        names = shipped_names(kind)
        assert names == sorted(p.stem for p in (PACKAGE_CONFIGS / kind).glob(f"*{suffix}"))
        assert names and all(shipped_config(kind, n).is_file() for n in names)
    assert {"debug", "gpu_example"} <= set(shipped_names("slurm"))
    with pytest.raises(ValueError, match="unknown kind 'slrum'"):
        shipped_config_dir("slrum")


def test_every_shipped_config_is_valid(tmp_path):
    for name in shipped_names("slurm"):
        assert load_slurm_config(name).source == shipped_config("slurm", name)
    for name in shipped_names("similarity"):
        assert load_similarity_config(shipped_config("similarity", name))
    refused = []
    for name in shipped_names("models"):
        # Checkpoints live in a project root (trained by the demo): only those may be absent.
        try:
            load_models_config(shipped_config("models", name), base_dir=tmp_path)
        except ConfigError as error:
            problems = str(error).splitlines()[1:]
            assert problems and all(p.endswith(".safetensors does not exist.") for p in problems)
            refused.append(name)
    assert "demo" in refused  # the demo's own checkpoints are not in an empty root
    demo_ids = json.loads(shipped_config("models", "demo").read_text())
    for name in shipped_names("model_sets"):
        assert load_model_sets(shipped_config("model_sets", name), demo_ids)
    for name in shipped_names("datasets"):
        names = read_dataset_list([str(shipped_config("datasets", name))])
        assert names and all(n.startswith("wds/") for n in names)


def test_demo_defaults_are_the_shipped_configs():
    assert shipped_config("models", "demo") == demo.DEFAULT_MODELS_CONFIG
    assert shipped_config("similarity", "default") == demo.DEFAULT_SIMILARITY_CONFIG
    assert demo.DEFAULT_MODELS_CONFIG.is_file() and demo.DEFAULT_SIMILARITY_CONFIG.is_file()


def test_slurm_config_names_paths_and_errors(tmp_path, monkeypatch):
    assert resolve_slurm_config_path("debug") == shipped_config("slurm", "debug")
    # A file given by path wins, also one whose name is a shipped name.
    own = tmp_path / "debug"
    own.write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert resolve_slurm_config_path("debug") == own
    own.unlink()
    # Only a bare name is looked up among the shipped ones.
    for value in ("sub/debug", "debug.json", "nope"):
        with pytest.raises(MissingInputError, match="debug, gpu_example") as error:
            resolve_slurm_config_path(value)
        assert repr(value) in str(error.value)
