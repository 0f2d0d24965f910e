"""Pooling a block's output to one vector per image, inside the forward hook.

Pooling runs in float32 on the model's device before anything is copied to the host, so only
``(batch, d)`` crosses to the CPU. Conventions:

* conv maps (``nchw`` or ``nhwc``): ``gap`` = mean over the spatial positions.
* tokens (``nld`` batch-first or ``lnd`` sequence-first): ``cls`` = the first token;
  ``mean_patch`` = mean of the non-prefix tokens (class *and* register tokens excluded);
  ``mean_all`` = mean of every token.
"""

from __future__ import annotations

import torch

from sim_consistency.errors import ConfigError

__all__ = ["pool_block_output", "resolve_pooling", "TOKEN_POOLINGS", "MAP_POOLINGS"]

TOKEN_POOLINGS = ("cls", "mean_patch", "mean_all")
MAP_POOLINGS = ("gap",)


def resolve_pooling(kind: str, n_prefix_tokens: int, configured: str | None) -> str:
    """Return the pooling used for a block of ``kind`` given the model's configured pooling.

    Conv maps are always average-pooled (``gap``). For tokens the configured pooling wins;
    without one, ``cls`` when the block has a class token and ``mean_all`` otherwise.

    Raises:
        ConfigError: ``cls``/``mean_patch`` asked for tokens that have no prefix token, or
            ``gap`` asked for tokens.
    """
    if kind == "conv_map":
        return "gap"
    if configured is None:
        return "cls" if n_prefix_tokens > 0 else "mean_all"
    if configured == "gap":
        # A model-wide "gap" on a token block means "average every position".
        return "mean_all"
    if configured == "cls" and n_prefix_tokens == 0:
        raise ConfigError(
            "pooling 'cls' needs a class token, but this block has no prefix tokens. "
            "Use 'mean_all' (or 'mean_patch')."
        )
    if configured not in TOKEN_POOLINGS:
        raise ConfigError(f"unknown token pooling {configured!r}. Valid: {', '.join(TOKEN_POOLINGS)}.")
    return configured


def pool_block_output(
    output: torch.Tensor, *, layout: str, pooling: str, n_prefix_tokens: int = 0
) -> torch.Tensor:
    """Return the ``(batch, d)`` float32 pooled representation of one block's output.

    Args:
        output: the block's output tensor, laid out as ``layout``.
        layout: ``nchw`` | ``nhwc`` (conv maps) or ``nld`` | ``lnd`` (tokens).
        pooling: ``gap`` for maps; ``cls``, ``mean_patch``, ``mean_all`` for tokens.
        n_prefix_tokens: class + register tokens at the start of the sequence.
    """
    x = output.float()
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
