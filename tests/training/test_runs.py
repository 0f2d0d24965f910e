"""Runs: content keys, staleness checks, atomic checkpoints with metadata."""

from __future__ import annotations

import json

import pytest
import torch

from sim_consistency.errors import ConfigError
from sim_consistency.models import load_state_dict_file, state_dict_sha256
from sim_consistency.project import ProjectLocation
from sim_consistency.training import (
    FitOptions,
    TrainingRun,
    run_key,
    stale_reason,
    weight_distance,
    write_checkpoint,
)

ARCH = {"model_id": "a_init", "source": "timm", "model_name": "test_resnet"}


def _run(**changes) -> TrainingRun:
    values = {
        "model_id": "a_w0",
        "arch": "a_init",
        "role": "pretrained",
        "run_group": "a",
        "fit": FitOptions(epochs=3, lr=1e-3),
        "snapshots": (1,),
    }
    return TrainingRun(**{**values, **changes})


def _key(run: TrainingRun, parent_key: str | None = None) -> str:
    return run_key(run, arch_recipe=ARCH, dataset="wds/digits", parent_key=parent_key)


def test_key_covers_recipe_arch_dataset_and_parent():
    base = _key(_run())
    assert _key(_run()) == base
    assert _key(_run(fit=FitOptions(epochs=3, lr=2e-3))) != base
    assert _key(_run(train_fraction=0.5)) != base
    assert _key(_run(), parent_key="p") != base
    assert (
        run_key(_run(), arch_recipe={**ARCH, "img_size": 16}, dataset="wds/digits", parent_key=None)
        != base
    )
    assert run_key(_run(), arch_recipe=ARCH, dataset="wds/digits_rotated", parent_key=None) != base
    # metadata-only fields (role, group) do not change the weights, hence not the key
    assert _key(_run(role="finetuned", run_group="b")) == base


def test_outputs_and_checkpoint_metadata():
    run = _run(parent="x_w0_e2", branch_epoch=2, role="branched")
    assert run.output_ids == ["a_w0_e1", "a_w0"]
    meta = run.checkpoint_metadata(3)
    assert meta["analysis_epoch"] == 5 and meta["branch_epoch"] == 2
    assert meta["role"] == "branched" and meta["lr"] == 1e-3 and meta["parent"] == "x_w0_e2"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"role": "teacher"}, "unknown role 'teacher'"),
        ({"snapshots": (3,)}, r"snapshots must be increasing epochs in 1..2 \(got \[3\]\)"),
        ({"snapshots": (2, 1)}, "snapshots must be increasing"),
        ({"train_fraction": 0.0}, r"train_fraction must be in \(0, 1\]"),
    ],
)
def test_invalid_runs_name_the_run(changes, message):
    with pytest.raises(ConfigError, match=f"training run 'a_w0': {message}"):
        _run(**changes)


def test_staleness_and_atomic_checkpoints(tmp_path):
    location = ProjectLocation.resolve(tmp_path).create()
    run = _run()
    key = _key(run)
    assert stale_reason(location, run, key) == "a_w0_e1: not trained yet"
    state = {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(3)}
    for model_id in run.output_ids:
        digest = write_checkpoint(location, model_id, state, {"run_key": key, "x": 1})
    assert digest == state_dict_sha256(state)
    assert not list(location.models.glob("*.partial"))
    assert stale_reason(location, run, key) is None
    stored = json.loads(location.model_recipe_file("a_w0").read_text())
    assert stored["weights_sha256"] == digest and stored["x"] == 1
    assert torch.equal(load_state_dict_file(location.model_weights_file("a_w0"))["w"], state["w"])
    assert "recipe changed" in stale_reason(location, run, _key(_run(fit=FitOptions(3, 0.1))))
    # weights replaced behind the metadata's back: never silently reused
    write_checkpoint(location, "a_w0", {**state, "w": state["w"] + 1}, {"run_key": key})
    location.model_recipe_file("a_w0").write_text(json.dumps({**stored}))
    assert "weights differ from the recorded digest" in stale_reason(location, run, key)


def test_child_is_stale_when_parent_weights_change(tmp_path):
    location = ProjectLocation.resolve(tmp_path).create()
    child = _run(model_id="a_ft", parent="a_w0", snapshots=(), role="finetuned")
    key = _key(child, "pk")
    write_checkpoint(location, "a_w0", {"w": torch.ones(2)}, {"run_key": "pk"})
    parent_sha = state_dict_sha256({"w": torch.ones(2)})
    write_checkpoint(
        location,
        "a_ft",
        {"w": torch.zeros(2)},
        {"run_key": key, "parent_weights_sha256": parent_sha},
    )
    assert stale_reason(location, child, key) is None
    write_checkpoint(location, "a_w0", {"w": torch.full((2,), 2.0)}, {"run_key": "pk"})
    assert stale_reason(location, child, key) == "a_ft: parent a_w0 changed since it was trained"


def test_weight_distance_float64():
    ref = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[0.0, 4.0]])}
    moved = {"a": torch.tensor([3.0, 1.0]), "b": torch.tensor([[0.0, 4.0]])}
    assert weight_distance(ref, ref, ["a", "b"]) == {"l2": 0.0, "relative": 0.0}
    got = weight_distance(moved, ref, ["a", "b"])
    assert got["l2"] == pytest.approx(1.0) and got["relative"] == pytest.approx(0.2)
