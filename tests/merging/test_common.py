"""One suite over every merge method: keys, shapes and dtypes kept; W in -> W out."""

from __future__ import annotations

import pytest
import torch

from sim_consistency.merging import (
    greedy_soup,
    monosoup,
    pruned_soup,
    task_arithmetic,
    ties_merge,
    uniform_soup,
    wise_ft,
)
from tests.merging.conftest import perturbed

METHODS = {
    "uniform": lambda w, v: uniform_soup([w, v]),
    "weighted": lambda w, v: uniform_soup([w, v], weights=[0.3, 0.7]),
    "greedy": lambda w, v: greedy_soup({"a": w, "b": v}, lambda sd: 0.0)[0],
    "pruned": lambda w, v: pruned_soup({"a": w, "b": v}, lambda sd: 0.0)[0],
    "wise_ft": lambda w, v: wise_ft(w, v, 0.3),
    "task_arithmetic": lambda w, v: task_arithmetic(w, [v, v], lam=0.5),
    "ties_global": lambda w, v: ties_merge(w, [v, v], keep=0.5),
    "ties_per_tensor": lambda w, v: ties_merge(w, [v], keep=0.5, scope="per_tensor"),
    "monosoup": lambda w, v: monosoup(w, v).monosoup,
    "highonly": lambda w, v: monosoup(w, v).highonly,
    "lowonly": lambda w, v: monosoup(w, v, rank_rule="variance").lowonly,
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_identical_inputs_give_the_input(method, resnet_sd):
    out = METHODS[method](resnet_sd, resnet_sd)
    assert list(out) == list(resnet_sd)
    for key, value in resnet_sd.items():
        assert out[key].dtype == value.dtype and out[key].shape == value.shape
        torch.testing.assert_close(out[key], value, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_keys_shapes_dtypes_kept_and_integer_buffers_copied(method, resnet_sd):
    half = {k: v.half() if v.is_floating_point() else v for k, v in resnet_sd.items()}
    other = perturbed(half, 3)
    out = METHODS[method](half, other)
    assert list(out) == list(half)
    for key, value in half.items():
        assert out[key].dtype == value.dtype and out[key].shape == value.shape
        assert bool(torch.isfinite(out[key].float()).all())
        if not value.is_floating_point():
            assert torch.equal(out[key], value)


def test_public_api_is_exported_and_documented():
    import inspect

    import sim_consistency.merging as merging

    promised = ["uniform_soup", "greedy_soup", "pruned_soup", "wise_ft", "task_arithmetic"]
    promised += ["ties_merge", "monosoup", "VARIANT_METHODS", "materialise_variant"]
    for name in promised:
        assert name in merging.__all__
        if inspect.isfunction(getattr(merging, name)):
            assert getattr(merging, name).__doc__
    params = inspect.signature(merging.ties_merge).parameters
    assert params["keep"].default == 0.2 and params["scope"].default == "global"
    params = inspect.signature(merging.greedy_soup).parameters
    assert (params["accept"].default, params["order"].default) == (">=", "sorted")
    params = inspect.signature(merging.monosoup).parameters
    assert (params["rank_rule"].default, params["R"].default) == ("vetterli", 0.8)
