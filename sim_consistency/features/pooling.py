"""Pooling a block's output to one vector per image, inside the forward hook.

Pooling runs in float32 on the model's device before anything is copied to the host, so only
``(batch, d)`` crosses to the CPU. Conventions:

* conv maps (``nchw`` or ``nhwc``): ``gap`` = mean over the spatial positions.
* tokens (``nld`` batch-first or ``lnd`` sequence-first): ``cls`` = the first token;
  ``mean_patch`` = mean of the non-prefix tokens (class *and* register tokens excluded);
  ``mean_all`` = mean of every token.
* vectors (``nd``): stored as they are (pooling ``none``).

Which pooling each block gets is decided once, by the model factory
(:attr:`sim_consistency.models.LoadedModel.block_pooling`).
"""

from __future__ import annotations

import torch

__all__ = ["pool_block_output", "TOKEN_POOLINGS", "MAP_POOLINGS"]

TOKEN_POOLINGS = ("cls", "mean_patch", "mean_all")
MAP_POOLINGS = ("gap",)


def pool_block_output(
    output: torch.Tensor, *, layout: str, pooling: str, n_prefix_tokens: int = 0
) -> torch.Tensor:
    """Return the ``(batch, d)`` float32 pooled representation of one block's output.

    Args:
        output: the block's output tensor, laid out as ``layout``.
        layout: ``nchw`` | ``nhwc`` (conv maps), ``nld`` | ``lnd`` (tokens) or ``nd``.
        pooling: ``gap`` for maps; ``cls``, ``mean_patch``, ``mean_all`` for tokens;
            ``none`` for vectors.
        n_prefix_tokens: class + register tokens at the start of the sequence.
    """
    x = output.float()
    if layout == "nd":
        return x
    if layout == "nchw":
        return x.mean(dim=(2, 3))
    if layout == "nhwc":
        return x.mean(dim=(1, 2))
    if layout == "lnd":
        x = x.transpose(0, 1)
    elif layout != "nld":
        raise ValueError(f"unknown block layout {layout!r}")
    if pooling == "cls":
        return x[:, 0]
    if pooling == "mean_patch":
        return x[:, n_prefix_tokens:].mean(dim=1)
    if pooling == "mean_all":
        return x.mean(dim=1)
    raise ValueError(f"unknown token pooling {pooling!r}")
