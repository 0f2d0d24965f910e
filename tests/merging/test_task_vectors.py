"""Task arithmetic and TIES: hand-checked vectors, and endpoints on a real timm model."""

from __future__ import annotations

import pytest
import torch

from sim_consistency.errors import MergeError
from sim_consistency.merging import task_arithmetic, ties_merge
from tests.merging.conftest import perturbed


def _vec(*values: float) -> dict:
    return {"w": torch.tensor(values, dtype=torch.float64)}


def test_task_arithmetic_lambda_negation_and_coeffs(vit_sd):
    ft = perturbed(vit_sd, 5)
    key = "blocks.0.mlp.fc1.weight"
    assert torch.equal(task_arithmetic(vit_sd, [ft])[key], ft[key])
    negated = task_arithmetic(vit_sd, [ft], lam=-1.0)
    torch.testing.assert_close(negated[key], 2 * vit_sd[key] - ft[key])
    base, a, b = _vec(1, 1), _vec(3, 1), _vec(1, 5)  # τ_a = (2, 0), τ_b = (0, 4)
    out = task_arithmetic(base, [a, b], lam=0.5, coeffs=[1.0, -0.5])
    torch.testing.assert_close(out["w"], torch.tensor([1 + 0.5 * 2, 1 - 0.5 * 0.5 * 4]).double())
    with pytest.raises(MergeError, match="2 fine-tuned models but 1 coeffs"):
        task_arithmetic(base, [a, b], coeffs=[1.0])
    with pytest.raises(MergeError, match="empty"):
        task_arithmetic(base, [])


def test_ties_hand_checked():
    base = _vec(0, 0, 0, 0, 0)
    t1 = _vec(3, -1, 0.5, 2, -4)  # keep 0.4 of 5: |τ| >= 3rd smallest (2) -> (3, 0, 0, 2, -4)
    t2 = _vec(-2, -2, 1, 0.1, 4)  # 3rd smallest magnitude is 2 -> (-2, -2, 0, 0, 4)
    # elected signs of the sum (1, -2, 0, 2, 0): (+, -, 0, +, 0); zeros -> majority sign (+)
    # disjoint means: 3 (t1 only), -2 (t2), nothing agrees -> 0, 2 (t1), 4 (t2 agrees with +)
    out = ties_merge(base, [t1, t2], keep=0.4, lam=1.0)
    torch.testing.assert_close(out["w"], torch.tensor([3.0, -2.0, 0.0, 2.0, 4.0]).double())
    out = ties_merge(base, [t1, t2], keep=0.4, lam=0.5)
    torch.testing.assert_close(out["w"], torch.tensor([1.5, -1.0, 0.0, 1.0, 2.0]).double())
    # Two agreeing contributors are averaged: keep everything.
    out = ties_merge(_vec(1), [_vec(3), _vec(5)], keep=1.0)
    torch.testing.assert_close(out["w"], torch.tensor([1.0 + 3.0]).double())


def test_ties_zero_sign_with_zero_majority_elects_plus():
    """Exactly opposite task vectors: every summed sign and the model-wide majority are 0.
    We elect +1 (mergekit's rule for a zero sum); the authors' code would average the
    negative entries instead (module docstring)."""
    base = {"w": torch.zeros(4, dtype=torch.float64)}
    up = {"w": torch.tensor([1.0, -2.0, 3.0, -4.0], dtype=torch.float64)}
    down = {"w": -up["w"]}
    merged = ties_merge(base, [up, down], keep=1.0)
    assert torch.equal(merged["w"], torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))


def test_ties_global_versus_per_tensor_trimming():
    base = {"a": torch.zeros(2, dtype=torch.float64), "b": torch.zeros(2, dtype=torch.float64)}
    ft = {"a": torch.tensor([10.0, 20.0]).double(), "b": torch.tensor([1.0, 2.0]).double()}
    # global: the 2nd smallest of |(10, 20, 1, 2)| is 2 -> b's 1 is trimmed
    out = ties_merge(base, [ft], keep=0.5, scope="global")
    torch.testing.assert_close(out["b"], torch.tensor([0.0, 2.0]).double())
    torch.testing.assert_close(out["a"], ft["a"])
    # per tensor: each tensor keeps its own top half (threshold its own smallest) -> all kept
    out = ties_merge(base, [ft], keep=0.5, scope="per_tensor")
    torch.testing.assert_close(out["b"], ft["b"])


def test_ties_on_a_real_model(resnet_sd):
    ft = perturbed(resnet_sd, 2)
    out = ties_merge(resnet_sd, [ft], keep=1.0)
    for key, value in resnet_sd.items():
        if value.is_floating_point():
            torch.testing.assert_close(out[key], ft[key])
        else:
            assert torch.equal(out[key], value)  # integer buffers from the base
    trimmed = ties_merge(resnet_sd, [ft], keep=0.2)
    changed = sum(int((trimmed[k] != resnet_sd[k]).sum()) for k in resnet_sd)
    total = sum(v.numel() for v in resnet_sd.values() if v.is_floating_point())
    assert changed == pytest.approx(0.2 * total, rel=0.01)


def test_ties_errors():
    with pytest.raises(MergeError, match=r"keep must be in \(0, 1\]"):
        ties_merge(_vec(0), [_vec(1)], keep=0.0)
    with pytest.raises(MergeError, match="scope must be 'global' or 'per_tensor'"):
        ties_merge(_vec(0), [_vec(1)], scope="layer")
    with pytest.raises(MergeError, match="tensor 'w' of 'finetuned #0' has shape"):
        ties_merge(_vec(0, 0), [_vec(1)])
