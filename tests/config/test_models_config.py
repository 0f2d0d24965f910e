"""The models config door: valid entries become frozen specs; every problem is reported."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sim_consistency.config import (
    dependency_order,
    load_models_config,
    parse_models_config,
    select_models,
)
from sim_consistency.errors import ConfigError, MissingInputError

DESIGN_EXAMPLE = {
    "vitb32_openai": {"source": "open_clip", "model_name": "ViT-B-32", "pretrained": "openai"},
    "cnx_in12k": {"source": "timm", "model_name": "convnext_small.in12k", "pretrained": True},
    "cnx_ft": {"source": "timm", "model_name": "convnext_small.in12k_ft_in1k", "pretrained": True},
    "run_3": {"source": "checkpoint", "arch": "cnx_in12k", "path": "run_3.pt"},
    "soup_uniform": {"variant": {"method": "uniform", "ingredients": ["cnx_ft", "run_3"]}},
    "soup_greedy": {
        "variant": {
            "method": "greedy",
            "ingredients": ["cnx_ft", "run_3"],
            "heldout": "wds/digits:val",
            "accept": ">=",
        }
    },
    "mono": {
        "variant": {
            "method": "monosoup",
            "base": "cnx_in12k",
            "finetuned": "cnx_ft",
            "rank_rule": "vetterli",
            "min_rel_update": 0.01,
        }
    },
    "mono_high": {"variant": {"method": "highonly", "base": "cnx_in12k", "finetuned": "cnx_ft"}},
    "mono_low": {"variant": {"method": "lowonly", "base": "cnx_in12k", "finetuned": "cnx_ft"}},
}


def _write(tmp_path, raw):
    path = tmp_path / "models.json"
    path.write_text(json.dumps(raw))
    return path


def test_design_example_loads(tmp_path):
    (tmp_path / "run_3.pt").write_bytes(b"x")
    specs = load_models_config(_write(tmp_path, DESIGN_EXAMPLE))
    assert list(specs) == list(DESIGN_EXAMPLE)
    assert specs["vitb32_openai"].pretrained == "openai"
    assert specs["run_3"].path == tmp_path / "run_3.pt"
    assert specs["run_3"].references() == ("cnx_in12k",)
    assert specs["soup_greedy"].source == "variant"
    assert specs["soup_greedy"].variant.options["accept"] == ">="
    assert specs["mono"].references() == ("cnx_in12k", "cnx_ft")
    with pytest.raises(dataclasses.FrozenInstanceError):
        specs["cnx_ft"].pretrained = False  # type: ignore[misc]
    order = dependency_order(specs, ["soup_uniform"])
    assert order.index("cnx_in12k") < order.index("run_3") < order.index("soup_uniform")
    recipe = specs["soup_greedy"].recipe()
    assert json.loads(json.dumps(recipe))["variant"]["ingredients"] == ["cnx_ft", "run_3"]


def test_metadata_is_carried():
    specs = parse_models_config(
        {
            "m": {
                "source": "timm",
                "model_name": "test_vit",
                "objective": "supervised",
                "metadata": {"branch_epoch": 3},
            }
        }
    )
    assert dict(specs["m"].metadata) == {"branch_epoch": 3, "objective": "supervised"}


def test_every_problem_reported_with_entry_names(tmp_path):
    raw = {
        "a": {"source": "timm", "model_name": "test_vit", "pretraind": True},
        "b": {"source": "tim", "model_name": "x"},
        "c": {"source": "checkpoint", "arch": "a", "path": "missing.pt"},
        "d": {"variant": {"method": "uniform", "ingredients": ["a", "zzz"]}},
        "e": {"variant": {"method": "greedy", "ingredients": ["a"]}},
        "f": {"variant": {"method": "souper", "ingredients": ["a"]}},
        "g": {"source": "timm", "model_name": "test_vit", "pooling": "max"},
        "h": {"variant": {"method": "uniform", "ingredients": []}},
    }
    with pytest.raises(ConfigError) as info:
        load_models_config(_write(tmp_path, raw))
    msg = str(info.value)
    assert "models.json" in msg
    assert "'a': unknown key 'pretraind'; did you mean 'pretrained'?" in msg
    assert "'b': unknown source 'tim'; did you mean 'timm'?" in msg
    assert "'c': checkpoint file" in msg and "missing.pt does not exist" in msg
    assert "'d': references unknown entry 'zzz'" in msg
    assert "'e': missing key 'variant.heldout'" in msg
    assert "'f': unknown variant.method 'souper'" in msg
    assert "'g': unknown pooling 'max'" in msg
    assert "'h': variant.ingredients must be an entry id or a non-empty list" in msg
    assert "8 problem(s)" in msg


def test_cycles_are_errors():
    raw = {
        "x": {"variant": {"method": "uniform", "ingredients": ["y"]}},
        "y": {"variant": {"method": "wise_ft", "base": "z", "finetuned": "x"}},
        "z": {"variant": {"method": "uniform", "ingredients": ["z"]}},
    }
    with pytest.raises(ConfigError, match=r"reference cycle x -> y -> x") as info:
        parse_models_config(raw)
    assert "reference cycle z -> z" in str(info.value)


def test_checkpoint_arch_must_not_be_variant(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"x")
    raw = {
        "a": {"source": "timm", "model_name": "test_vit"},
        "s": {"variant": {"method": "uniform", "ingredients": ["a"]}},
        "c": {"source": "checkpoint", "arch": "s", "path": "w.pt"},
    }
    with pytest.raises(ConfigError, match="arch 's' is a variant"):
        parse_models_config(raw, base_dir=tmp_path)


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ([], "non-empty JSON object"),
        ({"a b": {"source": "timm", "model_name": "x"}}, "model ids name files"),
        ({"a": "timm"}, "an entry is a JSON object"),
        ({"a": {"model_name": "x"}}, "missing 'source'"),
        ({"a": {"source": "timm"}}, "needs key 'model_name'"),
        (
            {"a": {"source": "timm", "model_name": "x", "blocks": "("}},
            "blocks must be a compiling regex",
        ),
        ({"a": {"source": "timm", "model_name": "x", "img_size": 0}}, "img_size"),
        ({"a": {"source": "timm", "model_name": "x", "pretrained": 3}}, "pretrained must be"),
    ],
)
def test_bad_entries(raw, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_models_config(raw)


def test_monosoup_preset_and_include_buffers_are_validated():
    mono = {"method": "monosoup", "base": "a", "finetuned": "a"}
    raw = {
        "a": {"source": "timm", "model_name": "x"},
        "p": {"variant": {**mono, "preset": "convnxt"}},
        "q": {"variant": {**mono, "include_buffers": "yes"}},
        "r": {"variant": {**mono, "preset": "clip", "R": 0.5, "include_buffers": True}},
        "g": {"variant": {"method": "pruned", "ingredients": ["a"], "heldout": "d:val", "seed": 1}},
    }
    with pytest.raises(ConfigError) as err:
        parse_models_config(raw)
    msg = str(err.value)
    assert "'p': unknown variant.preset 'convnxt'; did you mean 'convnext'?" in msg
    assert "Valid: clip, convnext, convnext_cka." in msg
    assert "'q': variant.include_buffers must be true or false (got 'yes')." in msg
    assert "'g': unknown key 'variant.seed'" in msg  # pruned is deterministic: no seed
    assert "'r'" not in msg


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(MissingInputError, match="models config not found"):
        load_models_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        load_models_config(bad)


def test_select_models():
    specs = parse_models_config(
        {
            "vit": {"source": "timm", "model_name": "test_vit"},
            "cnx": {"source": "timm", "model_name": "test_convnext"},
        }
    )
    assert select_models(specs, None) == ["vit", "cnx"]
    assert select_models(specs, ["cnx"]) == ["cnx"]
    with pytest.raises(ConfigError, match="unknown model id.*'vitt'; did you mean 'vit'"):
        select_models(specs, ["vitt"])


@pytest.mark.parametrize(
    "name", ["torchvision_example", "ssl_example", "custom_example", "hf_example", "python_example"]
)
def test_source_examples_load_and_list_blocks(name, monkeypatch, tmp_path):
    """configs/models/<source>_example.json: loads as shipped (paths relative to the config) and
    every entry that needs no Hugging Face config lists its blocks on the meta device, offline."""
    from pathlib import Path

    from sim_consistency.models import create_model

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    specs = load_models_config(repo / "configs" / "models" / f"{name}.json")
    assert specs
    for spec in specs.values():
        if spec.source == "hf":
            continue  # needs config.json from the Hugging Face cache
        loaded = create_model(spec, specs, device="meta", location=tmp_path)
        assert loaded.block_names
        if spec.module_name is not None:
            assert loaded.rep2rep is not None and loaded.rep2rep.dim > 0
