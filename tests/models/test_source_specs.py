"""Every base source validates its own keys with its spec class (models/sources/specs.py)."""

from __future__ import annotations

import typing

import pytest

from sim_consistency.config.models import ModelSpec, parse_models_config
from sim_consistency.errors import ConfigError
from sim_consistency.models.sources import MODEL_SOURCES, SOURCE_SPECS
from sim_consistency.models.sources.checkpoint import CheckpointSpec
from sim_consistency.models.sources.open_clip import OpenClipSpec
from sim_consistency.models.sources.timm import TimmSpec


def test_every_base_source_has_a_spec_class_and_a_builder():
    sources = set(typing.get_args(typing.get_type_hints(ModelSpec)["source"]))
    assert sources - {"variant"} == set(SOURCE_SPECS)
    assert set(SOURCE_SPECS) <= set(MODEL_SOURCES)
    assert (SOURCE_SPECS["timm"], SOURCE_SPECS["open_clip"], SOURCE_SPECS["checkpoint"]) == (
        TimmSpec,
        OpenClipSpec,
        CheckpointSpec,
    )


def test_timm_open_clip_checkpoint_specs_fill_the_fields_their_builders_read(tmp_path):
    ckpt = tmp_path / "run.pt"
    ckpt.write_bytes(b"")
    specs = parse_models_config(
        {
            "vit": {"source": "timm", "model_name": "vit_tiny_patch16_224", "pretrained": "x"},
            "clip": {"source": "open_clip", "model_name": "ViT-B-32", "model_parameters": {}},
            "run": {"source": "checkpoint", "arch": "vit", "path": "run.pt"},
        },
        base_dir=tmp_path,
    )
    vit, clip, run = specs["vit"], specs["clip"], specs["run"]
    assert (vit.model_name, vit.pretrained, vit.weights, vit.options) == (
        "vit_tiny_patch16_224",
        "x",
        None,
        None,
    )
    assert clip.pretrained is True  # Rep2Rep's dialect: model_parameters means pretrained
    assert (run.arch, run.path, run.model_name, run.options) == ("vit", ckpt, None, None)
    assert "options" not in vit.recipe() and "options" not in run.recipe()


def test_spec_classes_report_their_own_problems(tmp_path):
    with pytest.raises(ConfigError) as info:
        parse_models_config(
            {
                "a": {"source": "timm", "model_name": 3, "pretrained": 1.5, "weights": "no.pt"},
                "b": {"source": "open_clip", "model_name": "x", "model_parameters": {"k": 1}},
                "c": {"source": "checkpoint", "arch": "a", "path": "missing.pt"},
                "d": {"source": "timm"},
            },
            base_dir=tmp_path,
        )
    message = str(info.value)
    assert "'a': model_name must be a string (got 3)" in message
    assert "'a': pretrained must be true/false or a tag string (got 1.5)" in message
    assert f"'a': weights file {tmp_path / 'no.pt'} does not exist" in message
    assert "'b': unknown key 'model_parameters.k'" in message
    assert f"'c': checkpoint file {tmp_path / 'missing.pt'} does not exist" in message
    assert "'d': source 'timm' needs key 'model_name'" in message
