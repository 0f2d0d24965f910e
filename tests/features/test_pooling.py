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


def _rep2rep_reference(output: torch.Tensor, token_extraction: str | None) -> torch.Tensor:
    """Rep2Rep's path written out: thingsvision's token extraction / flatten, float32, then
    ``Featurizer.forward``'s ``x / max(||x||_2, 1e-12)`` per row, in float64."""
    x = output.double()
    if token_extraction == "cls_token":
        x = x[:, 0, :]
    elif token_extraction == "avg_pool":
        x = x[:, 1:, :].mean(dim=1)
    else:
        x = x.reshape(x.shape[0], -1)
    norms = x.pow(2).sum(dim=1, keepdim=True).sqrt().clamp_min(1e-12)
    return x / norms


def test_rep2rep_representation_is_l2_normalised_at_extraction_like_rep2rep():
    from sim_consistency.features.pooling import rep2rep_representation

    tokens = torch.randn(3, 5, 4) * 100.0
    conv = torch.randn(3, 2, 3, 3) * 1e-3
    for out, how in ((tokens, "cls_token"), (tokens, "avg_pool"), (conv, None)):
        got = rep2rep_representation(out, token_extraction=how)
        assert got.dtype == torch.float32
        assert torch.allclose(got.double(), _rep2rep_reference(out, how), atol=1e-6)
        assert torch.allclose(got.double().norm(dim=1), torch.ones(3, dtype=torch.float64))
    # Extreme rows: an all-zero row stays zero (no NaN); a small row is a unit row; a row below
    # F.normalize's eps is divided by the eps (1e-30 / 1e-12), exactly as Rep2Rep's rows are.
    extreme = torch.zeros(3, 6)
    extreme[1, 0] = 1e-6
    extreme[2, 0] = 1e-30
    got = rep2rep_representation(extreme, token_extraction=None)
    assert torch.equal(got[0], torch.zeros(6))
    assert torch.isclose(got[1, 0], torch.tensor(1.0))
    assert torch.isclose(got[2, 0], torch.tensor(1e-18))
