"""State-dict files and content digests (sim_consistency/models/checkpoints.py)."""

from __future__ import annotations

import argparse
from pathlib import Path, PurePosixPath

import pytest
import timm
import torch
from safetensors.torch import save_file

from sim_consistency.errors import ConfigError, MissingInputError
from sim_consistency.models import load_state_dict_file, normalize_state_dict, state_dict_sha256


@pytest.fixture(scope="module")
def state_dict() -> dict[str, torch.Tensor]:
    return timm.create_model("test_resnet", pretrained=False).state_dict()


CONTAINERS = {
    "raw": lambda sd: sd,
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 3},
    "model": lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
    "model_state_dict": lambda sd: {"model_state_dict": sd, "step": 10},
    "module_prefix": lambda sd: {f"module.{k}": v for k, v in sd.items()},
    "nested": lambda sd: {"checkpoint": 1, "state_dict": {"module": sd}},
}


@pytest.mark.parametrize("container", sorted(CONTAINERS))
def test_torch_containers_unwrap_to_the_same_weights(tmp_path: Path, state_dict, container) -> None:
    path = tmp_path / "ckpt.pt"
    torch.save(CONTAINERS[container](state_dict), path)
    loaded = load_state_dict_file(path)
    assert list(loaded) == list(state_dict)
    assert state_dict_sha256(loaded) == state_dict_sha256(state_dict)


def test_safetensors_and_torch_files_digest_equal(tmp_path: Path, state_dict) -> None:
    save_file({k: v.contiguous() for k, v in state_dict.items()}, tmp_path / "w.safetensors")
    torch.save(state_dict, tmp_path / "w.bin")
    assert state_dict_sha256(load_state_dict_file(tmp_path / "w.safetensors")) == state_dict_sha256(
        load_state_dict_file(tmp_path / "w.bin")
    )


def test_model_soups_keys_are_renamed_and_text_tower_dropped() -> None:
    raw = {
        "model.visual.conv1.weight": torch.ones(2),
        "model.visual.transformer.resblocks.0.ln_1.weight": torch.ones(3),
        "model.token_embedding.weight": torch.ones(4),
        "model.positional_embedding": torch.ones(5),
        "model.logit_scale": torch.ones(()),
        "classification_head.weight": torch.ones(10, 2),
        "classification_head.bias": torch.zeros(10),
    }
    assert list(normalize_state_dict({"state_dict": raw})) == [
        "visual.conv1.weight",
        "visual.transformer.resblocks.0.ln_1.weight",
        "classification_head.weight",
        "classification_head.bias",
    ]


def test_missing_and_unreadable_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="nope.pt"):
        load_state_dict_file(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match="garbage.pt: not a readable torch checkpoint"):
        load_state_dict_file(garbage)
    bad_safetensors = tmp_path / "bad.safetensors"
    bad_safetensors.write_bytes(b"\x00" * 16)
    with pytest.raises(ConfigError, match="bad.safetensors: not a readable safetensors"):
        load_state_dict_file(bad_safetensors)


def test_pickled_objects_are_refused_not_executed(tmp_path: Path, state_dict) -> None:
    path = tmp_path / "with_path.pt"
    torch.save({"state_dict": state_dict, "out_dir": PurePosixPath("/runs/1")}, path)
    with pytest.raises(ConfigError, match="weights_only=True.*PurePosixPath"):
        load_state_dict_file(path)


def test_timm_training_checkpoints_with_args_load(tmp_path: Path, state_dict) -> None:
    """timm's train.py saves ``args`` (an argparse.Namespace) next to the weights."""
    path = tmp_path / "timm_train.pth.tar"
    torch.save({"epoch": 3, "arch": "test_resnet", "state_dict": state_dict,
                "args": argparse.Namespace(lr=0.1)}, path)  # fmt: skip
    assert state_dict_sha256(load_state_dict_file(path)) == state_dict_sha256(state_dict)


def _shifted(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v + 1 if v.is_floating_point() else v for k, v in state_dict.items()}


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("prefix", ["_orig_mod.", "module._orig_mod.", "_orig_mod.module."])
def test_torch_compile_and_ddp_prefixes_are_stripped(tmp_path: Path, state_dict, prefix, suffix):
    """``torch.compile`` (``_orig_mod.``) and DDP (``module.``) prefixes, in either order."""
    path = tmp_path / f"compiled{suffix}"
    wrapped = {prefix + k: v.contiguous() for k, v in state_dict.items()}
    save_file(wrapped, path) if suffix == ".safetensors" else torch.save(wrapped, path)
    loaded = load_state_dict_file(path)
    assert sorted(loaded) == sorted(state_dict)  # safetensors stores keys sorted
    assert state_dict_sha256(loaded) == state_dict_sha256(state_dict)


@pytest.mark.parametrize("ema_key", ["state_dict_ema", "model_ema"])
def test_ema_weights_are_preferred_as_timm_does(tmp_path: Path, state_dict, ema_key) -> None:
    """A checkpoint with EMA weights yields them (timm's load_state_dict(use_ema=True)), also
    when they carry the compile prefix."""
    ema = {f"_orig_mod.{k}": v for k, v in _shifted(state_dict).items()}
    path = tmp_path / "with_ema.pt"
    torch.save({"state_dict": state_dict, ema_key: ema, "epoch": 9}, path)
    loaded = load_state_dict_file(path)
    assert state_dict_sha256(loaded) == state_dict_sha256(_shifted(state_dict))
    assert state_dict_sha256(normalize_state_dict(torch.load(path))) == state_dict_sha256(loaded)


def test_non_tensor_entries_and_empty_checkpoints_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not tensors"):
        normalize_state_dict({"a": torch.ones(1), "b": 3})
    with pytest.raises(ConfigError, match="holds no state dict"):
        normalize_state_dict({"state_dict": {}})


def test_digest_is_content_only(state_dict) -> None:
    digest = state_dict_sha256(state_dict)
    reordered = dict(reversed(list(state_dict.items())))
    cloned = {k: v.clone() for k, v in state_dict.items()}
    assert state_dict_sha256(reordered) == state_dict_sha256(cloned) == digest
    name = next(k for k, v in state_dict.items() if v.is_floating_point() and v.numel() > 1)
    changed = dict(cloned)
    changed[name] = cloned[name].clone()
    changed[name].view(-1)[0] += 1e-3
    assert state_dict_sha256(changed) != digest
    as_double = dict(cloned)
    as_double[name] = cloned[name].double()
    assert state_dict_sha256(as_double) != digest
    renamed = {("x" + k if k == name else k): v for k, v in cloned.items()}
    assert state_dict_sha256(renamed) != digest


def test_digest_handles_bfloat16_scalars_and_non_contiguous() -> None:
    tensors = {
        "bf16": torch.arange(6, dtype=torch.bfloat16),
        "scalar": torch.tensor(3.0),
        "t": torch.arange(6.0).reshape(2, 3).t(),
        "empty": torch.zeros(0, 4),
    }
    digest = state_dict_sha256(tensors)
    assert len(digest) == 64
    assert state_dict_sha256({**tensors, "t": tensors["t"].contiguous()}) == digest
