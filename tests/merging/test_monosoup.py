"""MonoSoup, high-only and low-only: algebra on real timm models, hand-checked spectra."""

from __future__ import annotations

import math

import pytest
import torch

from sim_consistency.errors import MergeError, NonFiniteError
from sim_consistency.merging import effective_rank, mixing_coefficients, monosoup, select_rank
from tests.merging.conftest import perturbed

STAT_KEYS = {
    "name",
    "edited",
    "skip_reason",
    "shape",
    "rows",
    "cols",
    "r",
    "k",
    "P_k",
    "rho",
    "cos_alpha",
    "lambda_high",
    "lambda_low",
    "erank",
}


@pytest.fixture(scope="module")
def convnext_pair(convnext_sd):
    return convnext_sd, perturbed(convnext_sd, 7, scale=0.05)


@pytest.fixture(scope="module")
def convnext_result(convnext_pair):
    return monosoup(*convnext_pair, rank_rule="vetterli", min_rel_update=1e-3)


def test_high_plus_low_minus_base_is_finetuned(convnext_pair, convnext_result):
    w0, w1 = convnext_pair
    edited = [layer["name"] for layer in convnext_result.layers if layer["edited"]]
    assert len(edited) > 10
    for name in edited:
        recombined = (
            convnext_result.highonly[name].double()
            + convnext_result.lowonly[name].double()
            - w0[name].double()
        )
        torch.testing.assert_close(recombined, w1[name].double(), rtol=0, atol=1e-6)


def test_untouched_tensors_come_from_w1_or_w0(convnext_pair, convnext_result):
    w0, w1 = convnext_pair
    skipped = [layer for layer in convnext_result.layers if not layer["edited"]]
    assert {layer["skip_reason"] for layer in skipped} == {"fewer than 2 dims"}
    for variant in ("monosoup", "highonly", "lowonly"):
        out = convnext_result.variant(variant)
        assert list(out) == list(w1)
        for layer in skipped:
            assert torch.equal(out[layer["name"]], w1[layer["name"]])
    from_base = monosoup(w0, w1, min_rel_update=1e-3, untouched_from="base")
    for layer in skipped:
        assert torch.equal(from_base.monosoup[layer["name"]], w0[layer["name"]])


def test_statistics_for_every_entry(convnext_pair, convnext_result):
    w0, _ = convnext_pair
    assert [layer["name"] for layer in convnext_result.layers] == list(w0)
    for layer in convnext_result.layers:
        assert set(layer) >= STAT_KEYS
        assert layer["shape"] == list(w0[layer["name"]].shape)
        if layer["edited"]:
            assert layer["lambda_high"] + layer["lambda_low"] == pytest.approx(1.0, abs=1e-15)
            assert 1 <= layer["k"] <= layer["r"] == min(layer["rows"], layer["cols"])
            assert layer["cos_alpha"] == pytest.approx(math.sqrt(layer["P_k"]), abs=1e-9)
            assert layer["k"] == math.ceil(layer["erank"] - 1e-9)
    # Conv kernels flattened to [out, -1]: the depthwise 7x7 conv is (24, 49).
    dw = next(x for x in convnext_result.layers if x["name"] == "stages.0.blocks.0.conv_dw.weight")
    assert (dw["rows"], dw["cols"]) == (24, 49)


def test_attention_in_proj_is_one_matrix(vit_sd):
    result = monosoup(vit_sd, perturbed(vit_sd, 1), min_rel_update=0.0)
    qkv = next(x for x in result.layers if x["name"] == "blocks.0.attn.qkv.weight")
    assert qkv["edited"] and (qkv["rows"], qkv["cols"]) == (192, 64)


def _reference(delta: torch.Tensor, rank_rule: str, R: float) -> dict:
    """A thin float64 SVD, rank rule and λ written out from the issue's formulas."""
    U, S, Vh = torch.linalg.svd(delta.reshape(delta.shape[0], -1).double(), full_matrices=False)
    energy = S**2 / (S**2).sum()
    if rank_rule == "variance":
        k = int((torch.cumsum(energy, 0) < R - 1e-12).sum()) + 1
    else:
        p = S / S.sum()
        k = math.ceil(float(torch.exp(-(p * p.log()).sum())) - 1e-9)
    P_k = float(energy[:k].sum())
    rho = float((S[k] / S[0]) ** 2) if k < S.numel() else 0.0
    lam_low = rho + (1 - rho) * math.sqrt(1 - P_k)
    high = (U[:, :k] * S[:k]) @ Vh[:k]
    return {"k": k, "P_k": P_k, "rho": rho, "lambda_low": lam_low, "high": high}


@pytest.mark.parametrize(
    ("rank_rule", "R"), [("vetterli", 0.8), ("variance", 0.8), ("variance", 0.5)]
)
def test_matches_a_plain_svd_reference(convnext_pair, rank_rule, R):
    w0, w1 = convnext_pair
    names = [
        "stem.0.weight",
        "stages.1.blocks.0.mlp.fc1.weight",
        "stages.0.blocks.0.conv_dw.weight",
    ]
    sub0, sub1 = {n: w0[n] for n in names}, {n: w1[n] for n in names}
    result = monosoup(sub0, sub1, rank_rule=rank_rule, R=R)
    for layer in result.layers:
        name = layer["name"]
        delta = sub1[name].double() - sub0[name].double()
        ref = _reference(delta, rank_rule, R)
        assert layer["k"] == ref["k"]
        for key in ("P_k", "rho", "lambda_low"):
            assert layer[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12)
        high = result.highonly[name].double() - sub0[name].double()
        torch.testing.assert_close(high.reshape(ref["high"].shape), ref["high"], rtol=0, atol=1e-6)
        expected = sub0[name].double() + (
            (1 - ref["lambda_low"]) * ref["high"]
            + ref["lambda_low"] * (delta.reshape(ref["high"].shape) - ref["high"])
        ).reshape(delta.shape)
        torch.testing.assert_close(result.monosoup[name].double(), expected, rtol=0, atol=1e-6)


def test_hand_checked_diagonal_update():
    # ΔW = diag(3, 2, 1): σ = (3, 2, 1), energies (9, 4, 1) / 14.
    w0 = {"w": torch.eye(3, dtype=torch.float64)}
    w1 = {"w": torch.eye(3, dtype=torch.float64) + torch.diag(torch.tensor([3.0, 2.0, 1.0]))}
    sigma = torch.tensor([3.0, 2.0, 1.0])
    # variance, R = 0.8: 9/14 = 0.64 < 0.8 <= 13/14 -> k = 2; ρ = (1/3)²
    assert select_rank(sigma, "variance", 0.8) == 2
    coef = mixing_coefficients(sigma, 2)
    assert coef["P_k"] == pytest.approx(13 / 14)
    assert coef["rho"] == pytest.approx(1 / 9)
    assert coef["lambda_low"] == pytest.approx(1 / 9 + 8 / 9 * math.sqrt(1 / 14))
    result = monosoup(w0, w1, rank_rule="variance", R=0.8)
    lam_low = coef["lambda_low"]
    expected = torch.eye(3, dtype=torch.float64) + torch.diag(
        torch.tensor([3 * (1 - lam_low), 2 * (1 - lam_low), 1 * lam_low], dtype=torch.float64)
    )
    torch.testing.assert_close(result.monosoup["w"], expected)
    torch.testing.assert_close(
        result.highonly["w"], torch.diag(torch.tensor([4.0, 3.0, 1.0]).double())
    )
    torch.testing.assert_close(
        result.lowonly["w"], torch.diag(torch.tensor([1.0, 1.0, 2.0]).double())
    )
    # vetterli: p = (1/2, 1/3, 1/6), exp(H) = 2.749 -> k = 3 = r: ρ = 0, λ_low = 0, W1 itself
    assert effective_rank(sigma) == pytest.approx(2.7495, abs=1e-4)
    assert select_rank(sigma, "freevariance") == select_rank(sigma, "vetterli") == 3
    result = monosoup(w0, w1, rank_rule="vetterli")
    assert result.layers[0]["lambda_low"] == 0.0 and result.layers[0]["rho"] == 0.0
    torch.testing.assert_close(result.monosoup["w"], w1["w"])


def test_exactly_low_rank_update_keeps_its_rank():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(48, 1, generator=g), torch.randn(1, 96, generator=g)
    w0 = {"w": torch.randn(48, 96, generator=g)}
    w1 = {"w": w0["w"] + u @ v}
    layer = monosoup(w0, w1).layers[0]
    assert (layer["k"], layer["r"], layer["rho"], layer["lambda_low"]) == (1, 48, 0.0, 0.0)
    assert layer["erank"] == pytest.approx(1.0)


def test_small_updates_are_skipped_with_their_reason(convnext_sd):
    w1 = dict(convnext_sd)
    w1["stem.0.weight"] = convnext_sd["stem.0.weight"] * (1 + 1e-4)
    w1["head.fc.weight"] = convnext_sd["head.fc.weight"] * 1.5
    result = monosoup(convnext_sd, w1, min_rel_update=1e-2)
    layers = {x["name"]: x for x in result.layers}
    assert layers["stem.0.weight"]["skip_reason"].startswith("relative update 0.0001")
    assert layers["stages.0.blocks.0.conv_dw.weight"]["skip_reason"] == "no update (W1 == W0)"
    assert layers["head.fc.weight"]["edited"]
    assert layers["head.fc.weight"]["rel_update"] == pytest.approx(0.5)


def test_errors_name_the_tensor(convnext_sd, vit_sd):
    bad = dict(convnext_sd, **{"stem.0.weight": convnext_sd["stem.0.weight"].clone()})
    bad["stem.0.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"tensor 'stem.0.weight' \(W1 − W0\) has NaN/inf"):
        monosoup(convnext_sd, bad)
    with pytest.raises(MergeError, match="different tensors"):
        monosoup(convnext_sd, vit_sd)
    with pytest.raises(MergeError, match="unknown rank_rule 'entropy'"):
        monosoup(convnext_sd, convnext_sd, rank_rule="entropy")
    with pytest.raises(MergeError, match="R must be in"):
        monosoup(convnext_sd, convnext_sd, rank_rule="variance", R=1.5)


class _WithBuffer(torch.nn.Module):
    """A layer with a ≥ 2-D float buffer (like a fixed sin-cos position table)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(8, 6)
        self.register_buffer("table", torch.randn(5, 4))


def test_parameters_only_by_default_buffers_on_request():
    """The reference scripts loop over named_parameters(): a changed 2-D float buffer keeps
    W1's value, recorded as a skipped buffer; include_buffers=True edits it like a weight."""
    torch.manual_seed(0)
    model = _WithBuffer()
    w0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    w1 = perturbed(w0, 3, scale=0.1)
    buffers = {name for name, _ in model.named_buffers()}
    result = monosoup(w0, w1, buffer_names=buffers)
    layers = {x["name"]: x for x in result.layers}
    assert layers["proj.weight"]["edited"]
    assert not layers["table"]["edited"]
    assert layers["table"]["skip_reason"].startswith("buffer (MonoSoup edits parameters only")
    for out in (result.monosoup, result.highonly, result.lowonly):
        assert torch.equal(out["table"], w1["table"])
    included = monosoup(
        w0, w1, rank_rule="variance", R=0.5, buffer_names=buffers, include_buffers=True
    )
    assert {x["name"]: x["edited"] for x in included.layers}["table"]
    assert not torch.equal(included.highonly["table"], w1["table"])
    from_base = monosoup(w0, w1, buffer_names=buffers, untouched_from="base")
    assert torch.equal(from_base.monosoup["table"], w0["table"])
