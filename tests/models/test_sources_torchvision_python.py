"""The torchvision and python sources (sim_consistency/models/sources/{torchvision,python}.py):
real random-weight networks build, run and expose their blocks; weights load exactly; missing
weights and broken factories fail with a note naming where we looked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from sim_consistency.errors import ConfigError, WeightsNotFoundError
from sim_consistency.models import create_model, state_dict_sha256
from sim_consistency.project import ProjectLocation

USER_MODELS = Path(__file__).parents[2] / "configs" / "models" / "user_models"

CIFAR = {
    "source": "python",
    "factory": "cifar_zoo.resnet:create_cifar10_resnet18",
    "kwargs": {"num_classes": 10, "width": 8},
    "python_path": str(USER_MODELS),
    "transform": {"input_size": 32, "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]},
    "num_classes": 10,
}


@pytest.fixture
def torch_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty torch hub cache; the network is off (HF_HUB_OFFLINE also covers URL weights)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


# -- torchvision ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family", "kind"),
    [
        ("resnet18", "resnet", "conv_map"),
        ("mobilenet_v3_small", "torchvision_efficientnet", "conv_map"),
        ("efficientnet_b0", "torchvision_efficientnet", "conv_map"),
        ("convnext_tiny", "torchvision_convnext", "conv_map"),
        ("vgg11", "torchvision_vgg", "conv_map"),
        ("swin_t", "torchvision_swin", "conv_map"),
        ("vit_b_16", "torchvision_vit", "tokens"),
    ],
)
def test_torchvision_random_weights_build_run_and_list_blocks(
    name: str, family: str, kind: str, make_specs
) -> None:
    specs = make_specs({"m": {"source": "torchvision", "model_name": name}})
    loaded = create_model(specs["m"], specs)
    assert loaded.family == family
    assert loaded.blocks[-1].kind == kind
    assert loaded.has_head and loaded.n_classes == 1000
    assert loaded.preprocessing["library"] == "torchvision"
    assert loaded.preprocessing["input_size"] == [3, 224, 224]
    with torch.inference_mode():
        logits = loaded.model(torch.randn(2, *loaded.input_size))
    assert logits.shape == (2, 1000)
    if kind == "tokens":
        assert loaded.pooling == "cls" and loaded.blocks[0].n_prefix_tokens == 1


def test_torchvision_preset_is_the_weights_eval_transform(make_specs) -> None:
    from PIL import Image

    specs = make_specs({"m": {"source": "torchvision", "model_name": "resnet18"}})
    loaded = create_model(specs["m"], specs)
    image = Image.new("RGB", (300, 260), (120, 30, 200))
    expected = torchvision.models.ResNet18_Weights.DEFAULT.transforms()(image)
    assert torch.equal(loaded.transform(image), expected)
    assert loaded.preprocessing["resize"] == [256] and loaded.preprocessing["crop"] == [224, 224]


def test_torchvision_weights_file_loads_exactly(tmp_path: Path, make_specs) -> None:
    source = torchvision.models.resnet18(num_classes=7)
    save_file(source.state_dict(), str(tmp_path / "rn.safetensors"))
    specs = make_specs(
        {
            "m": {
                "source": "torchvision",
                "model_name": "resnet18",
                "weights": "rn.safetensors",
                "num_classes": 7,
            }
        }
    )
    loaded = create_model(specs["m"], specs)
    assert loaded.weights_sha256 == state_dict_sha256(source.state_dict())
    assert loaded.n_classes == 7


def test_torchvision_pretrained_comes_from_the_torch_hub_cache(torch_home, make_specs) -> None:
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    source = torchvision.models.resnet18()
    cached = torch_home / "hub" / "checkpoints" / Path(weights.url).name
    cached.parent.mkdir(parents=True)
    torch.save(source.state_dict(), cached)
    rep2rep_entry = {
        "source": "torchvision",
        "model_name": "resnet18",
        "model_parameters": {"weights": "DEFAULT"},
        "module_name": "avgpool",
    }
    specs = make_specs({"m": rep2rep_entry})
    loaded = create_model(specs["m"], specs)
    assert loaded.weights_sha256 == state_dict_sha256(source.state_dict())
    assert loaded.preprocessing["weights"] == "ResNet18_Weights.IMAGENET1K_V1"


def test_torchvision_offline_weights_error_names_the_cache(torch_home, make_specs) -> None:
    specs = make_specs(
        {"m": {"source": "torchvision", "model_name": "resnet18", "pretrained": True}}
    )
    with pytest.raises(WeightsNotFoundError) as excinfo:
        create_model(specs["m"], specs)
    message = str(excinfo.value)
    assert "'m'" in message
    assert str(torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert '"weights"' in message


def test_torchvision_config_errors_name_entry_and_value(make_specs) -> None:
    with pytest.raises(ConfigError) as excinfo:
        make_specs(
            {
                "a": {"source": "torchvision", "model_name": "resnet181"},
                "b": {"source": "torchvision", "model_name": "resnet18", "pretrained": "V9"},
                "c": {"source": "torchvision", "model_name": "resnet18", "factory": "x:y"},
            }
        )
    message = str(excinfo.value)
    assert "'a': unknown torchvision model_name 'resnet181'; did you mean 'resnet18'" in message
    assert "'b': unknown weights of resnet18 'V9'" in message and "IMAGENET1K_V1" in message
    assert "'c': unknown key 'factory'" in message


# -- python -----------------------------------------------------------------------------------


def test_python_factory_builds_a_cifar_resnet18(make_specs) -> None:
    specs = make_specs({"cifar": CIFAR})
    loaded = create_model(specs["cifar"], specs)
    assert type(loaded.model).__name__ == "CifarResNet"
    assert loaded.family == "resnet" and len(loaded.block_names) == 8
    assert loaded.block_names[0] == "layer1.0" and loaded.blocks[-1].spatial == (4, 4)
    assert loaded.has_head and loaded.n_classes == 10
    assert loaded.preprocessing["input_size"] == [3, 32, 32]
    with torch.inference_mode():
        assert loaded.model(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    again = create_model(specs["cifar"], specs)  # seeded init: same entry, same weights
    assert again.weights_sha256 == loaded.weights_sha256


def test_python_weights_checkpoint_and_variant_load_exactly(tmp_path: Path, make_specs) -> None:
    import sys

    sys.path.insert(0, str(USER_MODELS))
    try:
        from cifar_zoo.resnet import create_cifar10_resnet18
    finally:
        sys.path.remove(str(USER_MODELS))
    trained = create_cifar10_resnet18(width=8)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.1)
    save_file(trained.state_dict(), str(tmp_path / "run.safetensors"))
    location = ProjectLocation(tmp_path / "root").create()
    save_file(trained.state_dict(), str(location.model_weights_file("soup")))
    specs = make_specs(
        {
            "cifar": {**CIFAR, "weights": "run.safetensors"},
            "cifar_random": CIFAR,
            "run": {"source": "checkpoint", "arch": "cifar_random", "path": "run.safetensors"},
            "soup": {"variant": {"method": "uniform", "ingredients": ["run", "cifar_random"]}},
        }
    )
    digest = state_dict_sha256(trained.state_dict())
    for model_id in ("cifar", "run", "soup"):
        loaded = create_model(specs[model_id], specs, location=location)
        assert loaded.weights_sha256 == digest, model_id
        assert loaded.n_classes == 10 and loaded.family == "resnet"


def test_python_factory_errors_are_clear(tmp_path: Path, make_specs) -> None:
    specs = make_specs(
        {"m": {**CIFAR, "factory": "my_zoo.models:create", "python_path": str(tmp_path)}}
    )
    with pytest.raises(ConfigError, match=rf"'m'.*cannot import 'my_zoo.models'.*{tmp_path}"):
        create_model(specs["m"], specs)
    bad = make_specs({"m": {**CIFAR, "factory": "cifar_zoo.resnet:not_a_model", "kwargs": {}}})
    with pytest.raises(ConfigError, match="returned a str, not a torch.nn.Module"):
        create_model(bad["m"], bad)
    with pytest.raises(ConfigError) as excinfo:
        make_specs(
            {
                "a": {**CIFAR, "factory": "no_colon"},
                "b": {**CIFAR, "transform": {"input_size": 32, "mean": [0.5]}},
                "c": {**CIFAR, "weights": "missing.pt"},
                "d": {**CIFAR, "python_path": "no_such_dir"},
            }
        )
    message = str(excinfo.value)
    assert "'a': factory must be 'package.module:function' (got 'no_colon')" in message
    assert (
        "'b': transform needs key 'std'" in message and "'b': transform.mean must be 3" in message
    )
    assert f"'c': weights file {tmp_path / 'missing.pt'} does not exist" in message
    assert f"'d': python_path folder {tmp_path / 'no_such_dir'} does not exist" in message


def test_merge_methods_build_on_a_python_architecture(tmp_path: Path, make_specs) -> None:
    """A uniform soup and a WiSE-FT of two python-source checkpoints are materialised and load."""
    import sys

    from sim_consistency.merging import materialise_variant
    from sim_consistency.models.checkpoints import load_state_dict_file

    sys.path.insert(0, str(USER_MODELS))
    try:
        from cifar_zoo.resnet import create_cifar10_resnet18
    finally:
        sys.path.remove(str(USER_MODELS))
    runs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = create_cifar10_resnet18(width=4)
        save_file(model.state_dict(), str(tmp_path / f"run_{seed}.safetensors"))
        runs.append(model.state_dict())
    location = ProjectLocation(tmp_path / "root").create()
    arch = {**CIFAR, "kwargs": {"num_classes": 10, "width": 4}}
    specs = make_specs(
        {
            "arch": arch,
            "run_0": {"source": "checkpoint", "arch": "arch", "path": "run_0.safetensors"},
            "run_1": {"source": "checkpoint", "arch": "arch", "path": "run_1.safetensors"},
            "soup": {"variant": {"method": "uniform", "ingredients": ["run_0", "run_1"]}},
            "wise": {"variant": {"method": "wise_ft", "base": "run_0", "finetuned": "run_1"}},
        }
    )
    path = materialise_variant(specs["soup"], specs, location=location)
    soup = load_state_dict_file(path)
    key = "layer1.0.conv1.weight"
    torch.testing.assert_close(soup[key], (runs[0][key] + runs[1][key]) / 2)
    materialise_variant(specs["wise"], specs, location=location)
    for model_id in ("soup", "wise"):
        loaded = create_model(specs[model_id], specs, location=location)
        assert loaded.family == "resnet" and loaded.n_classes == 10
