"""Rep2Rep's representation (``module_name`` + token extraction) is extracted as block
``rep2rep``, equal to an independent computation with plain forward hooks, and is the default
block of the model×model stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sim_consistency.config import load_models_config
from sim_consistency.data import load_dataset
from sim_consistency.features import open_cache
from sim_consistency.models import create_model
from sim_consistency.stages import feature_extraction

USER_MODELS = Path(__file__).parents[2] / "configs" / "models" / "user_models"
ENTRIES = {
    # Rep2Rep's ViT entries: the class token of `norm`
    "vit_cls": {
        "source": "timm",
        "model_name": "test_vit",
        "pretrained": False,
        "model_parameters": {"extract_cls_token": True, "token_extraction": "cls_token"},
        "module_name": "norm",
    },
    "vit_avg": {
        "source": "timm",
        "model_name": "test_vit",
        "pretrained": False,
        "model_parameters": {"token_extraction": "cls_token+avg_pool"},
        "module_name": "blocks.1",
    },
    # a conv model's pooled map, flattened (Rep2Rep's `avgpool` entries)
    "cifar": {
        "source": "python",
        "factory": "cifar_zoo.resnet:create_cifar10_resnet18",
        "kwargs": {"width": 8},
        "python_path": str(USER_MODELS),
        "transform": {"input_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "module_name": "layer4.1",
    },
}


def _independent(model: torch.nn.Module, module: str, images: torch.Tensor, token: str | None):
    """thingsvision's recipe by hand: hook, clone, reduce, then L2-normalise in float64."""
    store = {}
    handle = model.get_submodule(module).register_forward_hook(
        lambda _m, _i, out: store.__setitem__("act", out.clone())
    )
    with torch.inference_mode():
        model(images)
    handle.remove()
    act = store["act"].double()
    if act.ndim > 2 and token == "cls_token":
        act = act[:, 0, :]
    elif act.ndim > 2 and token == "cls_token+avg_pool":
        act = torch.cat((act[:, 0, :], act[:, 1:, :].mean(dim=1)), dim=1)
    elif act.ndim > 2:
        act = act.reshape(act.shape[0], -1)
    return (act / act.norm(dim=1, keepdim=True)).numpy()


def test_rep2rep_block_equals_hooks_computation(project, models_config) -> None:
    config = models_config(ENTRIES)
    args = ["--project_root", str(project.root), "--models_config", str(config)]
    args += ["--datasets", "wds/digits", "--splits", "test", "--max_samples", "24"]
    assert feature_extraction.main([*args, "--num_workers", "0", "--batch_size", "8"]) == 0
    specs = load_models_config(config)
    expected_tokens = {"vit_cls": "cls_token", "vit_avg": "cls_token+avg_pool", "cifar": None}
    for model_id, token in expected_tokens.items():
        loaded = create_model(specs[model_id], specs, location=project)
        data = load_dataset(
            "wds/digits", "test", location=project, max_samples=24, transform=loaded.transform
        )
        images = torch.stack([data[i].image for i in range(len(data))])
        expected = _independent(loaded.model, specs[model_id].module_name, images, token)
        with open_cache(project.feature_file("wds/digits", "test", model_id)) as cache:
            assert cache.block_names[-1] == "rep2rep"
            got = cache.block("rep2rep")
            attrs = cache.attrs["rep2rep"]
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
        assert attrs["module_name"] == specs[model_id].module_name
        assert attrs["token_extraction"] == (token or "flatten")
        assert attrs["normalization"] == "l2"
    assert got.shape[1] == 64 * 4 * 4  # cifar: layer4.1's (64, 4, 4) map, flattened


def test_bad_module_name_and_alignment_are_refused(tmp_path) -> None:
    from sim_consistency.config import parse_models_config
    from sim_consistency.errors import ConfigError

    specs = parse_models_config(
        {
            "a": {**ENTRIES["vit_cls"], "module_name": "nrom"},
            "b": {**ENTRIES["vit_cls"], "alignment": "gLocal"},
        },
        base_dir=tmp_path,
    )
    with pytest.raises(
        ConfigError, match="module_name 'nrom' is not a module.*did you mean 'norm'"
    ):
        create_model(specs["a"], specs)
    with pytest.raises(ConfigError, match="alignment 'gLocal'.*not supported"):
        create_model(specs["b"], specs)
    assert create_model(specs["b"], specs, device="meta").rep2rep.dim == 64  # listing works


def test_model_by_model_stages_default_to_the_rep2rep_block(tmp_path) -> None:
    from sim_consistency.stages._similarity_io import resolve_block

    with_r2r = {"block_names": ["blocks.0", "blocks.1", "rep2rep"]}
    without = {"block_names": ["blocks.0", "blocks.1"]}
    assert resolve_block(with_r2r, None, tmp_path) == "rep2rep"
    assert resolve_block(without, None, tmp_path) == "blocks.1"
    assert resolve_block(with_r2r, "blocks.0", tmp_path) == "blocks.0"


def test_list_blocks_on_rep2rep_entries_reads_no_weights(
    project, models_config, capsys, monkeypatch, tmp_path
) -> None:
    import json

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch"))
    fixture = Path(__file__).parents[1] / "fixtures" / "rep2rep"
    raw = json.loads((fixture / "models_config_with_alignment.json").read_text())
    ids = [
        "dino-vit-base-p16",
        "vgg16",
        "OpenCLIP_RN50_openai",
        "simclr-rn50",
        "DreamSim_dino_vitb16",
    ]
    config = models_config({k: raw[k] for k in ids})
    args = ["--project_root", str(project.root), "--models_config", str(config)]
    args += ["--datasets", "wds/digits", "--splits", "test", "--list_blocks"]
    assert feature_extraction.main(args) == 2  # DreamSim cannot be built
    out = capsys.readouterr()
    text = out.out + out.err
    assert "dino-vit-base-p16: vit, 12 blocks + rep2rep" in text
    assert "(module norm, output [2, 197, 768], float32)" in text
    assert "d=4096   pooling=flatten+l2 (module classifier.3" in text
    assert "DreamSim_dino_vitb16: cannot be built" in text
    assert not any(project.features.rglob("*.h5"))
