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

__all__ = ["pool_block_output", "rep2rep_representation", "TOKEN_POOLINGS", "MAP_POOLINGS"]

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


def rep2rep_representation(output: torch.Tensor, *, token_extraction: str | None) -> torch.Tensor:
    """Return Rep2Rep's representation of one module output: ``(batch, d)`` float32, unit rows.

    As thingsvision's ``extract_batch`` (which Rep2Rep calls with ``flatten_acts=True``) on the
    raw output, whatever its layout: with more than two axes, ``cls_token`` takes
    ``output[:, 0, :]``, ``avg_pool`` the mean of ``output[:, 1:, :]`` over tokens,
    ``cls_token+avg_pool`` both concatenated, and no token extraction flattens each sample.
    Rows are then L2-normalised (``x / max(||x||, 1e-12)``, zero rows stay zero) at extraction,
    as Rep2Rep does: its ``clip_benchmark.models.featurizer.Featurizer.forward`` applies
    ``F.normalize(dim=-1)`` (``normalize=True``, its default) to ``ThingsvisionModel.encode_image``
    (``_extract_batch(..., flatten_acts=True)`` cast to float32) and stores those rows as
    ``features_<split>.pt``; its similarity code (``tasks/model_similarity.py``: thingsvision's
    ``get_cka(...).compare`` / ``compute_rdm``) reads them as stored and normalises nothing more.

    Args:
        output: the module's output (the first tensor of a tuple, as thingsvision keeps it).
        token_extraction: ``cls_token``, ``avg_pool``, ``cls_token+avg_pool`` or ``None``.
    """
    x = output.float()
    if x.ndim > 2:
        if token_extraction == "cls_token":
            x = x[:, 0, :]
        elif token_extraction == "avg_pool":
            x = x[:, 1:, :].mean(dim=1)
        elif token_extraction == "cls_token+avg_pool":
            x = torch.cat((x[:, 0, :], x[:, 1:, :].mean(dim=1)), dim=1)
        elif token_extraction is None:
            x = x.reshape(x.shape[0], -1)
        else:
            raise ValueError(f"unknown token extraction {token_extraction!r}")
    return torch.nn.functional.normalize(x, p=2.0, dim=1)
