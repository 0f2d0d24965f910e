"""Rep2Rep's model configs as they are (sim_consistency/models/sources/{rep2rep,ssl_models,
custom}.py): both files load, every entry resolves to a builder, the big architectures list
their blocks on the meta device, ssl checkpoints map onto their architecture exactly, and what
cannot be built or found says why and where."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from sim_consistency.config import load_models_config
from sim_consistency.errors import ConfigError, WeightsNotFoundError
from sim_consistency.models import MODEL_SOURCES, create_model, state_dict_sha256
from sim_consistency.models.sources.rep2rep import CUSTOM_MODELS, SSL_MODELS
from sim_consistency.models.sources.ssl_models import ssl_checkpoint_files

CONFIGS = [
    Path(__file__).parents[1] / "fixtures" / "rep2rep" / name
    for name in ("models_config_wo_alignment.json", "models_config_with_alignment.json")
]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_rep2rep_model_configs_load_unchanged(path: Path) -> None:
    import json

    raw = json.loads(path.read_text())
    specs = load_models_config(path)
    assert list(specs) == list(raw)
    for model_id, spec in specs.items():
        entry = raw[model_id]
        assert spec.source in MODEL_SOURCES, model_id
        assert spec.module_name == entry["module_name"]
        assert spec.alignment == entry["alignment"]
        for key in ("objective", "dataset", "architecture", "embedding_dim", "size_fmt"):
            assert spec.metadata[key] == entry[key], (model_id, key)
        params = entry["model_parameters"]
        expected = params.get("token_extraction") or (
            "cls_token" if params.get("extract_cls_token") else None
        )
        assert spec.token_extraction == expected
        if spec.source == "ssl":
            assert spec.options.model_name in SSL_MODELS
        if spec.source == "custom":
            assert spec.options.model_name in CUSTOM_MODELS
        if spec.source == "timm":
            assert spec.pretrained is True  # thingsvision always loads the pretrained model
    assert {s.source for s in specs.values()} == {"ssl", "custom", "torchvision", "timm"}


def test_unknown_keys_in_our_own_sources_are_still_errors(make_specs) -> None:
    with pytest.raises(ConfigError) as excinfo:
        make_specs(
            {
                "a": {"source": "timm", "model_name": "test_vit", "embeding_dim": 3},
                "b": {"source": "ssl", "model_name": "dino-vit-small-p16", "factory": "x:y"},
                "c": {"source": "ssl", "model_name": "dino-vit-smal-p16"},
                "d": {"source": "custom", "model_name": "OpenCLIP", "model_parameters": {}},
                "e": {
                    "source": "timm",
                    "model_name": "test_vit",
                    "model_parameters": {"token_extraction": "cls"},
                    "module_name": "norm",
                },
            }
        )
    message = str(excinfo.value)
    assert "'a': unknown key 'embeding_dim'; did you mean 'embedding_dim'?" in message
    assert "'b': unknown key 'factory'" in message
    assert "'c': unknown ssl model_name 'dino-vit-smal-p16'; did you mean" in message
    assert "'d': custom OpenCLIP needs model_parameters.variant" in message
    assert "'e': unknown model_parameters.token_extraction 'cls'" in message


# -- meta device: no weights, no allocation ----------------------------------------------------

BIG = [
    "dinov2-vit-giant-p14",
    "OpenCLIP_EVA01-g-14_laion400m_s11b_b41k",
    "OpenCLIP_RN50_openai",
    "efficientnet_b7",
    "vgg16",
    "vit_huge_patch14_clip_224.laion2b",
    "swin_large_patch4_window7_224.ms_in22k",
    "dino-xcit-medium-24-p16",
    "simclr-rn50",
    "convnext_large",
]


@pytest.mark.parametrize("model_id", BIG)
def test_big_rep2rep_models_list_blocks_on_the_meta_device(
    model_id: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be looked up, let alone downloaded
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch"))
    specs = load_models_config(CONFIGS[1])
    loaded = create_model(specs[model_id], specs, device="meta")
    assert all(p.is_meta for p in loaded.model.parameters())
    assert loaded.blocks and loaded.family is not None
    assert loaded.weights_sha256 == ""
    names = dict(loaded.model.named_modules())
    assert specs[model_id].module_name in names  # Rep2Rep's module exists in our build


def test_refused_custom_models_say_what_they_need() -> None:
    specs = load_models_config(CONFIGS[1])
    with pytest.raises(ConfigError, match="DreamSim is not supported: it needs the `dreamsim`"):
        create_model(specs["DreamSim_dino_vitb16"], specs, device="meta")
    with pytest.raises(ConfigError, match="Kakaobrain_Align is not supported"):
        create_model(specs["Kakaobrain_Align"], specs, device="meta")


# -- ssl: architectures, key mappings, offline lookup ------------------------------------------


def test_ssl_vit_random_weights_run_with_thingsvision_transform(make_specs) -> None:
    specs = make_specs(
        {"m": {"source": "ssl", "model_name": "dino-vit-small-p16", "pretrained": False}}
    )
    loaded = create_model(specs["m"], specs)
    assert loaded.family == "vit" and len(loaded.block_names) == 12
    assert loaded.preprocessing["library"] == "thingsvision"
    assert loaded.preprocessing["resize"] == 256 and loaded.preprocessing["crop"] == [224, 224]
    with torch.inference_mode():
        out = loaded.model(torch.randn(2, *loaded.input_size))
    assert out.shape == (2, 384)  # headless, as thingsvision's DINO ViT


def _resnet50_trunk() -> dict[str, torch.Tensor]:
    model = torchvision.models.resnet50()
    return {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}


def test_vissl_checkpoint_maps_onto_torchvision_resnet50(tmp_path: Path, make_specs) -> None:
    trunk = _resnet50_trunk()
    vissl = {
        "classy_state_dict": {
            "base_model": {
                "model": {"trunk": {f"_feature_blocks.{k}": v for k, v in trunk.items()}}
            }
        }
    }
    torch.save(vissl, tmp_path / "simclr.torch")
    specs = make_specs(
        {"m": {"source": "ssl", "model_name": "simclr-rn50", "weights": "simclr.torch"}}
    )
    loaded = create_model(specs["m"], specs)
    assert loaded.weights_sha256 == state_dict_sha256(trunk)
    assert loaded.family == "resnet" and not loaded.has_head
    assert isinstance(loaded.model.fc, torch.nn.Identity)


def test_ssl_release_file_is_found_in_the_torch_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_specs
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    trunk = _resnet50_trunk()
    specs = make_specs({"m": {"source": "ssl", "model_name": "barlowtwins-rn50"}})
    looked = ssl_checkpoint_files("barlowtwins-rn50", SSL_MODELS["barlowtwins-rn50"])
    with pytest.raises(WeightsNotFoundError) as excinfo:
        create_model(specs["m"], specs)
    assert str(looked[-1]) in str(excinfo.value) and "'m'" in str(excinfo.value)
    looked[-1].parent.mkdir(parents=True)
    torch.save(trunk, looked[-1])
    loaded = create_model(specs["m"], specs)
    assert loaded.weights_sha256 == state_dict_sha256(trunk)


def test_ssl_timm_hosted_weights_missing_names_the_hf_cache(
    hub_env: Path, monkeypatch, make_specs
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    specs = make_specs({"m": {"source": "ssl", "model_name": "mae-vit-base-p16"}})
    with pytest.raises(WeightsNotFoundError) as excinfo:
        create_model(specs["m"], specs)
    message = str(excinfo.value)
    assert "timm/vit_base_patch16_224.mae" in message and str(hub_env / "hub") in message


def test_custom_openclip_missing_weights_names_the_hf_cache(hub_env: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    specs = load_models_config(CONFIGS[0])
    with pytest.raises(WeightsNotFoundError) as excinfo:
        create_model(specs["OpenCLIP_ViT-B-16_laion2b_s34b_b88k"], specs)
    assert str(hub_env / "hub") in str(excinfo.value)
