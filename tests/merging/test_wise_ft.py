"""WiSE-FT: exact endpoints and the linear path on a real timm model."""

from __future__ import annotations

import pytest
import torch

from sim_consistency.errors import MergeError
from sim_consistency.merging import wise_ft
from tests.merging.conftest import perturbed


def test_endpoints_are_exact(convnext_sd):
    ft = perturbed(convnext_sd, 3)
    for alpha, expected in ((0.0, convnext_sd), (1.0, ft)):
        out = wise_ft(convnext_sd, ft, alpha)
        assert all(torch.equal(out[k], expected[k]) for k in expected)


def test_midpoint_is_the_average(convnext_sd):
    ft = perturbed(convnext_sd, 4)
    out = wise_ft(convnext_sd, ft, 0.25)
    key = "stem.0.weight"
    torch.testing.assert_close(out[key], 0.75 * convnext_sd[key] + 0.25 * ft[key])


def test_errors(convnext_sd, vit_sd):
    with pytest.raises(MergeError, match="wise_ft"):
        wise_ft(convnext_sd, vit_sd, 0.5)
    with pytest.raises(MergeError, match="finite"):
        wise_ft(convnext_sd, convnext_sd, float("nan"))
