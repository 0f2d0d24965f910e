"""Weight geometry on real timm state dicts: exact distances, cosines and task vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from sim_consistency.errors import ConfigError
from sim_consistency.soup_metrics import weight_geometry


def _resnet_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return timm.create_model("test_resnet", pretrained=False, num_classes=10).state_dict()


@pytest.fixture(scope="module")
def states() -> dict[str, dict[str, torch.Tensor]]:
    return {"a": _resnet_state(0), "b": _resnet_state(1), "c": _resnet_state(2)}


def _weights(state, *, running=False):
    return {
        k: v
        for k, v in state.items()
        if v.dtype.is_floating_point
        and (running or not k.endswith(("running_mean", "running_var")))
    }


def _direct(sa, sb):
    va = torch.cat([v.double().flatten() for v in _weights(sa).values()])
    vb = torch.cat([v.double().flatten() for v in _weights(sb).values()])
    return float((va - vb).norm()), float(va @ vb / (va.norm() * vb.norm()))


def test_identical_models_have_distance_zero_and_cosine_one(states):
    geo = weight_geometry({"x": states["a"], "y": dict(states["a"])})
    row = geo.pairs.iloc[0]
    assert row["l2_distance"] == 0.0
    assert row["cosine"] == pytest.approx(1.0, abs=1e-12)
    assert (geo.layers["l2_distance"] == 0.0).all()


def test_distances_and_cosines_match_direct_computation(states):
    geo = weight_geometry(states)
    for row in geo.pairs.itertuples(index=False):
        dist, cos = _direct(states[row.model_a], states[row.model_b])
        assert row.l2_distance == pytest.approx(dist, rel=1e-10)
        assert row.cosine == pytest.approx(cos, rel=1e-10)
    # per-tensor squared distances add up to the whole-model one
    per_pair = geo.layers.groupby(["model_a", "model_b"])["l2_distance"].apply(
        lambda d: math.sqrt(float((d**2).sum()))
    )
    for row in geo.pairs.itertuples(index=False):
        assert per_pair[(row.model_a, row.model_b)] == pytest.approx(row.l2_distance, rel=1e-10)
    # integer buffers and running statistics are not weights
    assert not geo.layers["tensor"].str.endswith(("num_batches_tracked", "running_var")).any()


def test_close_models_keep_precision(states):
    """Centred Grams: a 1e-6 relative perturbation is measured without cancellation."""
    near = {
        k: v + 1e-6 * torch.ones_like(v) if v.dtype.is_floating_point else v
        for k, v in states["a"].items()
    }
    geo = weight_geometry({"a": states["a"], "near": near})
    numel = sum(v.numel() for v in _weights(states["a"]).values())
    diff = torch.cat(
        [(near[k].double() - v.double()).flatten() for k, v in _weights(states["a"]).items()]
    )
    assert geo.pairs.iloc[0]["l2_distance"] == pytest.approx(float(diff.norm()), rel=1e-6)
    assert float(diff.norm()) == pytest.approx(1e-6 * math.sqrt(numel), rel=1e-3)


def test_task_vectors_relative_to_base(states, tmp_path):
    paths = {}
    for name, state in states.items():  # read from safetensors files, one tensor at a time
        paths[name] = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(paths[name]))
    geo = weight_geometry(paths, base="a")
    tv = geo.pairs[geo.pairs["kind"] == "task_vector"]
    assert len(tv) == 1 and set(tv.iloc[0][["model_a", "model_b"]]) == {"b", "c"}
    wa, wb, wc = (
        torch.cat([v.double().flatten() for v in _weights(states[m]).values()]) for m in "abc"
    )
    tb, tc = wb - wa, wc - wa
    assert tv.iloc[0]["cosine"] == pytest.approx(float(tb @ tc / (tb.norm() * tc.norm())), rel=1e-9)
    assert tv.iloc[0]["l2_distance"] == pytest.approx(float((tb - tc).norm()), rel=1e-9)
    norms = geo.norms.set_index(["model_id", "kind"])["norm"]
    assert norms[("b", "task_vector")] == pytest.approx(float(tb.norm()), rel=1e-9)
    assert norms[("b", "task_vector")] == pytest.approx(
        geo.pairs.query("kind == 'weights' and model_a == 'a' and model_b == 'b'")[
            "l2_distance"
        ].iloc[0],
        rel=1e-9,
    )


def test_running_stats_can_be_included(states):
    geo = weight_geometry(states, include_running_stats=True)
    assert geo.layers["tensor"].str.endswith("running_var").any()
    assert (geo.pairs["scope"] == "weights+running_stats").all()


def test_bad_inputs_are_named(states, tmp_path):
    with pytest.raises(ConfigError, match="at least two"):
        weight_geometry({"a": states["a"]})
    with pytest.raises(ConfigError, match="base 'zz'"):
        weight_geometry(states, base="zz")
    torch.manual_seed(0)
    vit = timm.create_model("test_vit", pretrained=False, num_classes=10).state_dict()
    with pytest.raises(ConfigError, match="layout"):
        weight_geometry({"a": states["a"], "vit": vit})
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        weight_geometry({"a": states["a"], "m": tmp_path / "missing.safetensors"})
    other = dict(states["a"])
    other["fc.weight"] = torch.zeros(3, 3)
    with pytest.raises(ConfigError, match="fc.weight"):
        weight_geometry({"a": states["a"], "o": other})


def test_cosine_matrix_is_consistent_with_distances(states):
    geo = weight_geometry(states)
    norms = geo.norms.set_index("model_id")["norm"]
    for row in geo.pairs.itertuples(index=False):
        na, nb = norms[row.model_a], norms[row.model_b]
        rebuilt = math.sqrt(na**2 + nb**2 - 2 * na * nb * row.cosine)
        assert rebuilt == pytest.approx(row.l2_distance, rel=1e-8)
    assert np.isfinite(geo.pairs["cosine"]).all()
