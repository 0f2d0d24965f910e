"""Pooling conventions for conv maps and token sequences."""

from __future__ import annotations

import torch

from sim_consistency.features.pooling import pool_block_output


def test_token_poolings_respect_prefix_tokens():
    x = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)  # 1 cls + 1 reg + 3 patches
    assert torch.equal(pool_block_output(x, layout="nld", pooling="cls"), x[:, 0])
    assert torch.allclose(
        pool_block_output(x, layout="nld", pooling="mean_patch", n_prefix_tokens=2),
        x[:, 2:].mean(1),
    )
    assert torch.allclose(pool_block_output(x, layout="nld", pooling="mean_all"), x.mean(1))
    lnd = x.transpose(0, 1).contiguous()
    assert torch.equal(pool_block_output(lnd, layout="lnd", pooling="cls"), x[:, 0])


def test_map_pooling_and_dtype():
    x = torch.randn(2, 4, 3, 3, dtype=torch.float16)
    out = pool_block_output(x, layout="nchw", pooling="gap")
    assert out.dtype == torch.float32 and torch.allclose(out, x.float().mean((2, 3)))
    nhwc = x.permute(0, 2, 3, 1)
    assert torch.allclose(pool_block_output(nhwc, layout="nhwc", pooling="gap"), out)


def test_vectors_pass_through():
    x = torch.randn(3, 7)
    assert torch.equal(pool_block_output(x, layout="nd", pooling="none"), x)
