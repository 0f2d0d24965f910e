"""Model sources (sim_consistency/models/sources/): every source builds, weights load exactly,
missing weights fail fast with a note that says what to do."""

from __future__ import annotations

import json
import time
import typing
from pathlib import Path

import open_clip
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from sim_consistency.config.models import ModelSpec
from sim_consistency.errors import ConfigError, MissingInputError, WeightsNotFoundError
from sim_consistency.models import (
    MODEL_SOURCES,
    ImageClassifier,
    architecture_spec,
    create_model,
    hf_hub_cache_dir,
    state_dict_sha256,
)
from sim_consistency.project import ProjectLocation


def _save_safetensors(state_dict: dict[str, torch.Tensor], path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    return path


def test_registry_covers_every_source() -> None:
    sources = typing.get_args(typing.get_type_hints(ModelSpec)["source"])
    assert set(MODEL_SOURCES) == set(sources)
    assert {"timm", "open_clip", "checkpoint", "variant", "torchvision", "python"} <= set(sources)


# -- every source builds and runs -----------------------------------------------------------


@pytest.fixture
def every_source_config(tmp_path: Path, tiny_open_clip) -> tuple[dict, ProjectLocation]:
    """A models config with one entry per source and tiny architecture, files written."""
    location = ProjectLocation(tmp_path / "root").create()
    resnet = timm.create_model("test_resnet", pretrained=False, num_classes=5)
    torch.save({"state_dict": resnet.state_dict()}, tmp_path / "run_1.pt")
    clip = open_clip.create_model("simc-tiny-vit", pretrained=None, pretrained_text=False)
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    hf_config = {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 2}
    hf_config.update(num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
    (tmp_path / "hf_config.json").write_text(json.dumps(hf_config))
    _save_safetensors(resnet.state_dict(), location.model_weights_file("soup"))
    raw = {
        **{
            name: {"source": "timm", "model_name": name, "pretrained": False}
            for name in ("test_vit", "test_convnext", "test_resnet", "test_efficientnet")
        },
        "clip_vit": {"source": "open_clip", "model_name": "simc-tiny-vit"},
        "clip_rn": {"source": "open_clip", "model_name": "simc-tiny-rn"},
        "run_1": {"source": "checkpoint", "arch": "test_resnet", "path": "run_1.pt"},
        "soup": {"variant": {"method": "uniform", "ingredients": ["run_1", "test_resnet"]}},
        "tv": {"source": "torchvision", "model_name": "mobilenet_v3_small"},
        "ssl": {"source": "ssl", "model_name": "dino-vit-small-p16", "pretrained": False},
        "hf": {
            "source": "hf",
            "config": "hf_config.json",
            "transform": {"input_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        },
        "custom": {
            "source": "custom",
            "model_name": "OpenCLIP",
            "model_parameters": {"variant": "simc-tiny-vit"},
            "weights": "clip.pt",
            "module_name": "visual",
        },
        "cifar": {
            "source": "python",
            "factory": "cifar_zoo.resnet:create_cifar10_resnet18",
            "kwargs": {"width": 4},
            "python_path": str(Path(__file__).parents[2] / "configs" / "models" / "user_models"),
            "transform": {"input_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        },
    }
    return raw, location


@pytest.mark.slow
def test_every_source_builds_and_runs_forward(every_source_config, make_specs) -> None:
    raw, location = every_source_config
    specs = make_specs(raw)
    seen_sources = set()
    for model_id, spec in specs.items():
        loaded = create_model(spec, specs, location=location)
        seen_sources.add(spec.source)
        x = torch.zeros(2, *loaded.input_size)
        with torch.inference_mode():
            out = loaded.model(x)
        if not isinstance(out, torch.Tensor):  # transformers' ModelOutput
            out = out[0]
        assert out.shape[0] == 2, model_id
        assert not loaded.model.training
        assert loaded.block_names and loaded.blocks
        if loaded.has_head:
            assert out.shape == (2, loaded.n_classes)
    assert seen_sources == set(MODEL_SOURCES)


# -- local weights files ------------------------------------------------------------------


def test_timm_weights_file_loads_exactly(tmp_path: Path, make_specs) -> None:
    source = timm.create_model("test_convnext", pretrained=False)
    path = _save_safetensors(source.state_dict(), tmp_path / "cnx.safetensors")
    specs = make_specs(
        {"cnx": {"source": "timm", "model_name": "test_convnext", "weights": str(path)}}
    )
    loaded = create_model(specs["cnx"], specs)
    assert loaded.weights_sha256 == state_dict_sha256(source.state_dict())


def test_timm_weights_file_with_other_head_keeps_the_trunk(tmp_path: Path, make_specs) -> None:
    source = timm.create_model("test_resnet", pretrained=False)
    path = _save_safetensors(source.state_dict(), tmp_path / "rn.safetensors")
    specs = make_specs(
        {
            "rn": {
                "source": "timm",
                "model_name": "test_resnet",
                "weights": str(path),
                "num_classes": 3,
            }
        }
    )
    loaded = create_model(specs["rn"], specs)
    assert loaded.n_classes == 3
    trunk = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    got = {k: v for k, v in loaded.model.state_dict().items() if not k.startswith("fc.")}
    assert state_dict_sha256(got) == state_dict_sha256(trunk)


def test_open_clip_weights_file_loads_exactly(tmp_path: Path, make_specs, tiny_open_clip) -> None:
    source = open_clip.create_model("simc-tiny-vit", pretrained=None, pretrained_text=False)
    path = tmp_path / "clip.pt"
    torch.save(source.state_dict(), path)
    specs = make_specs(
        {"clip": {"source": "open_clip", "model_name": "simc-tiny-vit", "weights": str(path)}}
    )
    loaded = create_model(specs["clip"], specs)
    visual = {k: v for k, v in source.state_dict().items() if k.startswith("visual.")}
    assert loaded.weights_sha256 == state_dict_sha256(visual)
    assert not loaded.has_head and loaded.n_classes is None


# -- pretrained weights: Hugging Face cache, offline errors ----------------------------------


def _fake_hf_cache(cache_dir: Path, repo_id: str, filename: str, state_dict) -> Path:
    """Lay out a Hugging Face hub cache entry the way huggingface_hub writes one."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = cache_dir / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return _save_safetensors(state_dict, snapshot / filename)


def test_pretrained_timm_weights_load_from_the_hf_cache(
    hub_env: Path, monkeypatch: pytest.MonkeyPatch, make_specs
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the cache alone must be enough
    source = timm.create_model("test_vit", pretrained=False)
    assert hf_hub_cache_dir() == hub_env / "hub"
    _fake_hf_cache(
        hub_env / "hub", "timm/test_vit.r160_in1k", "model.safetensors", source.state_dict()
    )
    specs = make_specs(
        {
            "vit": {"source": "timm", "model_name": "test_vit", "pretrained": True},
            "vit_tag": {"source": "timm", "model_name": "test_vit", "pretrained": "r160_in1k"},
        }
    )
    for model_id in specs:
        loaded = create_model(specs[model_id], specs)
        assert loaded.weights_sha256 == state_dict_sha256(source.state_dict())


def _assert_weights_error(excinfo: pytest.ExceptionInfo, cache_dir: Path, repo_id: str) -> None:
    message = str(excinfo.value)
    assert str(cache_dir) in message
    assert repo_id in message
    assert '"weights"' in message
    assert "HF_HOME" in message


def test_offline_pretrained_timm_fails_fast(
    hub_env: Path, monkeypatch: pytest.MonkeyPatch, make_specs
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    specs = make_specs({"vit": {"source": "timm", "model_name": "test_vit", "pretrained": True}})
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as excinfo:
        create_model(specs["vit"], specs)
    assert time.perf_counter() - start < 15
    _assert_weights_error(excinfo, hub_env / "hub", "timm/test_vit.r160_in1k")


def test_unreachable_hub_fails_fast(
    hub_env: Path, monkeypatch: pytest.MonkeyPatch, make_specs
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    specs = make_specs({"vit": {"source": "timm", "model_name": "test_vit", "pretrained": True}})
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as excinfo:
        create_model(specs["vit"], specs)
    assert time.perf_counter() - start < 15
    _assert_weights_error(excinfo, hub_env / "hub", "timm/test_vit.r160_in1k")


def test_offline_pretrained_open_clip_fails_fast(
    hub_env: Path, monkeypatch: pytest.MonkeyPatch, make_specs
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    specs = make_specs(
        {
            "clip": {
                "source": "open_clip",
                "model_name": "ViT-B-32",
                "pretrained": "laion2b_s34b_b79k",
            }
        }
    )
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as excinfo:
        create_model(specs["clip"], specs)
    assert time.perf_counter() - start < 15
    _assert_weights_error(excinfo, hub_env / "hub", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K")


def test_unknown_names_and_tags_are_config_errors(make_specs, tiny_open_clip) -> None:
    cases = {
        "tv": ({"source": "timm", "model_name": "test_vitt"}, "did you mean test_vit"),
        "tt": (
            {"source": "timm", "model_name": "test_vit", "pretrained": "nope"},
            "test_vit.r160_in1k",
        ),
        "oc": ({"source": "open_clip", "model_name": "simc-tiny-vitt"}, "simc-tiny-vit"),
        "ot": (
            {"source": "open_clip", "model_name": "ViT-B-32", "pretrained": "nope"},
            "laion2b_s34b_b79k",
        ),
        "ob": (
            {"source": "open_clip", "model_name": "ViT-B-32", "pretrained": True},
            "needs a pretrained tag",
        ),
    }
    specs = make_specs({k: v for k, (v, _) in cases.items()})
    for model_id, (_, expected) in cases.items():
        with pytest.raises(ConfigError, match=expected):
            create_model(specs[model_id], specs)


# -- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_infers_head_size_and_loads_exactly(tmp_path: Path, make_specs) -> None:
    trained = timm.create_model("test_resnet", pretrained=False, num_classes=7)
    headless = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    torch.save({"model": trained.state_dict()}, tmp_path / "seven.pt")
    torch.save({f"module.{k}": v for k, v in headless.state_dict().items()}, tmp_path / "none.pt")
    specs = make_specs(
        {
            "rn": {"source": "timm", "model_name": "test_resnet", "pretrained": True},
            "seven": {"source": "checkpoint", "arch": "rn", "path": "seven.pt"},
            "none": {"source": "checkpoint", "arch": "rn", "path": "none.pt"},
        }
    )
    seven = create_model(specs["seven"], specs)  # no download: arch weights are not needed
    assert (seven.has_head, seven.n_classes) == (True, 7)
    assert seven.weights_sha256 == state_dict_sha256(trained.state_dict())
    assert seven.arch_id == "rn"
    none = create_model(specs["none"], specs)
    assert (none.has_head, none.n_classes) == (False, None)
    assert none.weights_sha256 == state_dict_sha256(headless.state_dict())


def test_checkpoint_missing_key_lists_keys(tmp_path: Path, make_specs) -> None:
    state_dict = timm.create_model("test_resnet", pretrained=False).state_dict()
    del state_dict["layer1.0.conv1.weight"]
    state_dict["extra.weight"] = torch.ones(1)
    torch.save(state_dict, tmp_path / "broken.pt")
    specs = make_specs(
        {
            "rn": {"source": "timm", "model_name": "test_resnet"},
            "broken": {"source": "checkpoint", "arch": "rn", "path": "broken.pt"},
        }
    )
    with pytest.raises(ConfigError) as excinfo:
        create_model(specs["broken"], specs)
    message = str(excinfo.value)
    assert "broken.pt" in message
    assert "1 missing (layer1.0.conv1.weight)" in message
    assert "1 unexpected (extra.weight)" in message


def test_checkpoint_of_another_architecture_reports_shapes(tmp_path: Path, make_specs) -> None:
    torch.save(timm.create_model("test_convnext").state_dict(), tmp_path / "cnx.pt")
    specs = make_specs(
        {
            "rn": {"source": "timm", "model_name": "test_resnet"},
            "wrong": {"source": "checkpoint", "arch": "rn", "path": "cnx.pt"},
        }
    )
    with pytest.raises(ConfigError, match="does not fit the architecture of 'rn'.*missing"):
        create_model(specs["wrong"], specs)


def _model_soups_checkpoint(clip_model: torch.nn.Module, n_classes: int) -> dict:
    """A model-soups ``ModelWrapper`` state dict: CLIP under ``model.`` (text transformer
    deleted, as model-soups does) and a linear ``classification_head``."""
    generator = torch.Generator().manual_seed(0)
    embed_dim = clip_model.visual.output_dim
    state = {
        f"model.{k}": v
        for k, v in clip_model.state_dict().items()
        if not k.startswith("transformer.")
    }
    state["classification_head.weight"] = torch.randn(n_classes, embed_dim, generator=generator)
    state["classification_head.bias"] = torch.randn(n_classes, generator=generator)
    return state


def test_model_soups_checkpoint_gives_normalized_logits(
    tmp_path: Path, make_specs, tiny_open_clip
) -> None:
    clip_model = open_clip.create_model("simc-tiny-vit", pretrained=None, pretrained_text=False)
    soup_state = _model_soups_checkpoint(clip_model, n_classes=4)
    torch.save(soup_state, tmp_path / "soup_run.pt")
    specs = make_specs(
        {
            "clip": {"source": "open_clip", "model_name": "simc-tiny-vit"},
            "soup_run": {"source": "checkpoint", "arch": "clip", "path": "soup_run.pt"},
        }
    )
    loaded = create_model(specs["soup_run"], specs)
    assert isinstance(loaded.model, ImageClassifier)
    assert (loaded.has_head, loaded.n_classes) == (True, 4)
    assert loaded.block_names == [
        "visual.transformer.resblocks.0",
        "visual.transformer.resblocks.1",
    ]
    x = torch.randn(3, *loaded.input_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = (
            F.normalize(clip_model.eval().visual(x), dim=-1)
            @ soup_state["classification_head.weight"].T
            + soup_state["classification_head.bias"]
        )
        assert torch.allclose(loaded.model(x), expected, atol=1e-5)


def test_model_soups_checkpoint_on_timm_arch_is_refused(
    tmp_path: Path, make_specs, tiny_open_clip
) -> None:
    clip_model = open_clip.create_model("simc-tiny-vit", pretrained=None, pretrained_text=False)
    torch.save(_model_soups_checkpoint(clip_model, 4), tmp_path / "soup_run.pt")
    specs = make_specs(
        {
            "vit": {"source": "timm", "model_name": "test_vit"},
            "soup_run": {"source": "checkpoint", "arch": "vit", "path": "soup_run.pt"},
        }
    )
    with pytest.raises(ConfigError, match="open_clip entry"):
        create_model(specs["soup_run"], specs)


def test_open_clip_checkpoint_from_full_clip_state_dict(
    tmp_path: Path, make_specs, tiny_open_clip
) -> None:
    clip_model = open_clip.create_model("simc-tiny-rn", pretrained=None, pretrained_text=False)
    torch.save({"state_dict": clip_model.state_dict()}, tmp_path / "clip_rn.pt")
    specs = make_specs(
        {
            "clip": {"source": "open_clip", "model_name": "simc-tiny-rn"},
            "ft": {"source": "checkpoint", "arch": "clip", "path": "clip_rn.pt"},
        }
    )
    loaded = create_model(specs["ft"], specs)
    visual = {k: v for k, v in clip_model.state_dict().items() if k.startswith("visual.")}
    assert loaded.weights_sha256 == state_dict_sha256(visual)
    assert loaded.family == "open_clip_resnet" and not loaded.has_head


# -- variants -------------------------------------------------------------------------------


def test_variant_without_weights_says_build_variants(tmp_path: Path, make_specs) -> None:
    torch.save(timm.create_model("test_resnet").state_dict(), tmp_path / "run_1.pt")
    specs = make_specs(
        {
            "rn": {"source": "timm", "model_name": "test_resnet"},
            "run_1": {"source": "checkpoint", "arch": "rn", "path": "run_1.pt"},
            "soup": {"variant": {"method": "uniform", "ingredients": ["run_1", "rn"]}},
        }
    )
    location = ProjectLocation(tmp_path / "root")
    with pytest.raises(MissingInputError, match="scripts/build_variants.py") as excinfo:
        create_model(specs["soup"], specs, location=location)
    assert str(location.model_weights_file("soup")) in str(excinfo.value)


def test_variant_loads_onto_its_first_ingredients_architecture(tmp_path: Path, make_specs) -> None:
    base = timm.create_model("test_vit", pretrained=False, num_classes=3)
    location = ProjectLocation(tmp_path / "root").create()
    _save_safetensors(base.state_dict(), location.model_weights_file("mono"))
    torch.save(base.state_dict(), tmp_path / "ft.pt")
    specs = make_specs(
        {
            "vit": {"source": "timm", "model_name": "test_vit", "pretrained": True},
            "ft": {"source": "checkpoint", "arch": "vit", "path": "ft.pt"},
            "wise": {"variant": {"method": "wise_ft", "base": "ft", "finetuned": "vit"}},
            "mono": {"variant": {"method": "monosoup", "base": "wise", "finetuned": "vit"}},
        }
    )
    assert architecture_spec(specs["mono"], specs).model_id == "vit"
    loaded = create_model(specs["mono"], specs, location=location)
    assert loaded.weights_sha256 == state_dict_sha256(base.state_dict())
    assert (loaded.family, loaded.n_classes, loaded.arch_id) == ("vit", 3, "vit")


def test_open_clip_hf_hub_model_loads_from_the_hf_cache(
    hub_env: Path, monkeypatch: pytest.MonkeyPatch, make_specs, tiny_open_clip
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = open_clip.create_model("simc-tiny-vit", pretrained=None, pretrained_text=False)
    weights = _fake_hf_cache(
        hub_env / "hub", "simc/tiny-clip", "open_clip_model.safetensors", source.state_dict()
    )
    (weights.parent / "open_clip_config.json").write_text(
        json.dumps(
            {
                "model_cfg": tiny_open_clip["simc-tiny-vit"],
                "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
            }
        )
    )
    specs = make_specs({"clip": {"source": "open_clip", "model_name": "hf-hub:simc/tiny-clip"}})
    loaded = create_model(specs["clip"], specs)
    visual = {k: v for k, v in source.state_dict().items() if k.startswith("visual.")}
    assert loaded.weights_sha256 == state_dict_sha256(visual)
    assert (loaded.preprocessing["mean"], loaded.preprocessing["std"]) == ([0.5] * 3, [0.25] * 3)


def test_checkpoint_at_another_resolution_goes_through_timm_filter(
    tmp_path: Path, make_specs
) -> None:
    torch.save(timm.create_model("test_vit").state_dict(), tmp_path / "ft160.pt")
    specs = make_specs(
        {
            "vit": {"source": "timm", "model_name": "test_vit", "img_size": 64},
            "ft": {"source": "checkpoint", "arch": "vit", "path": "ft160.pt"},
        }
    )
    loaded = create_model(specs["ft"], specs)  # pos_embed resampled by checkpoint_filter_fn
    assert loaded.model.pos_embed.shape[1] == (64 // 16) ** 2 + 1


def test_url_hosted_weights_cached_or_fail_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sim_consistency.models.sources._hub import url_file as _url_file

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    (tmp_path / "w.pth").write_bytes(b"cached")
    assert _url_file("http://127.0.0.1:9/a/w.pth", tmp_path, where="t") == tmp_path / "w.pth"
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError, match=r"other\.pth.*\"weights\""):
        _url_file("http://127.0.0.1:9/a/other.pth", tmp_path, where="t")
    assert time.perf_counter() - start < 15


def test_hf_hub_open_clip_with_weights_file_is_refused(tmp_path: Path, make_specs) -> None:
    (tmp_path / "w.pt").write_bytes(b"")
    specs = make_specs(
        {"clip": {"source": "open_clip", "model_name": "hf-hub:org/repo", "weights": "w.pt"}}
    )
    with pytest.raises(ConfigError, match="hf-hub"):
        create_model(specs["clip"], specs)
