"""BlockExtractor: one forward pass, every block, early stop when the head is not needed."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from sim_consistency.features import BlockExtractor, BlockSpec


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("test_vit", num_classes=10).eval()


def _specs(names, pooling="cls", n_prefix=1):
    return [BlockSpec(name, "nld", pooling, n_prefix) for name in names]


def test_stops_after_last_requested_block_without_head(vit):
    calls = []
    handles = [
        vit.blocks[i].register_forward_hook(lambda *_a, i=i: calls.append(i))
        for i in range(len(vit.blocks))
    ]
    head_calls = []
    handles.append(vit.head.register_forward_hook(lambda *_a: head_calls.append(1)))
    x = torch.randn(2, 3, 160, 160)
    try:
        with BlockExtractor(vit, _specs(["blocks.0", "blocks.2"]), with_logits=False) as ex:
            pooled, logits = ex(x)
        assert calls == [0, 1, 2] and head_calls == [] and logits is None
        assert set(pooled) == {"blocks.0", "blocks.2"}
        calls.clear()
        with BlockExtractor(vit, _specs(["blocks.0", "blocks.2"]), with_logits=True) as ex:
            pooled_full, logits = ex(x)
        assert calls == list(range(len(vit.blocks))) and head_calls == [1]
        with torch.inference_mode():
            np.testing.assert_array_equal(logits, vit(x).numpy())
        np.testing.assert_array_equal(pooled["blocks.2"], pooled_full["blocks.2"])
    finally:
        for h in handles:
            h.remove()


def test_hooks_are_removed_and_outputs_are_host_float32(vit):
    x = torch.randn(3, 3, 160, 160)
    with BlockExtractor(vit, _specs(["blocks.1"], "mean_patch"), with_logits=False) as ex:
        pooled, _ = ex(x)
    assert pooled["blocks.1"].dtype == np.float32 and pooled["blocks.1"].shape == (3, 64)
    assert all(not m._forward_hooks for m in vit.modules())
    with torch.inference_mode():
        tokens = vit.blocks[1](vit.blocks[0](vit._pos_embed(vit.patch_embed(x))))
    np.testing.assert_allclose(pooled["blocks.1"], tokens[:, 1:].mean(1).numpy(), atol=1e-6)


def test_unknown_block_is_an_error(vit):
    with pytest.raises(KeyError, match="blocks.99"):
        BlockExtractor(vit, _specs(["blocks.99"]), with_logits=False)
