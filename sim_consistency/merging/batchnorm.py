"""BatchNorm statistics of merged models: the three policies every averaging method offers.

Averaging weights does not average the activations they produce, so a soup's averaged BatchNorm
running statistics no longer match its own activations (Izmailov et al., "Averaging weights
leads to wider optima and better generalization" (SWA), UAI 2018, Sec. 3.2; the ModelSoup
study of Sobral et al. found the same for ResNets). Policies:

* ``average`` — keep the running statistics as the merge computed them (plain averaging).
* ``from_anchor`` — copy ``running_mean`` / ``running_var`` / ``num_batches_tracked`` from an
  anchor model (:func:`copy_batchnorm_buffers`).
* ``reset`` — recompute them on a declared split: running statistics zeroed, ``momentum=None``
  (a cumulative average over batches), only the BatchNorm layers in train mode, one pass without
  gradients (:func:`recompute_batchnorm`) — SWA's ``bn_update``.

Integer buffers (``num_batches_tracked``) are never averaged by any merge. Models without
BatchNorm (LayerNorm-only ViTs, ConvNeXt) are left unchanged; callers log that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from sim_consistency.config.variants import BN_POLICIES
from sim_consistency.merging.state import StateDict

__all__ = [
    "BN_POLICIES",
    "batchnorm_buffer_names",
    "copy_batchnorm_buffers",
    "recompute_batchnorm",
]

_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _batchnorm_modules(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def batchnorm_buffer_names(model: nn.Module) -> list[str]:
    """State-dict names of every BatchNorm running-statistics buffer of ``model``."""
    names = []
    for prefix, module in _batchnorm_modules(model):
        for buffer in _BN_BUFFERS:
            if getattr(module, buffer, None) is not None:
                names.append(f"{prefix}.{buffer}" if prefix else buffer)
    return names


def copy_batchnorm_buffers(
    state_dict: Mapping[str, torch.Tensor], anchor: Mapping[str, torch.Tensor], names: Iterable[str]
) -> StateDict:
    """Return ``state_dict`` with the BatchNorm buffers ``names`` taken from ``anchor``."""
    out = dict(state_dict)
    for name in names:
        out[name] = anchor[name].detach().clone()
    return out


@torch.no_grad()
def recompute_batchnorm(
    model: nn.Module, batches: Iterable[torch.Tensor], *, device: torch.device | str = "cpu"
) -> int:
    """Recompute every BatchNorm layer's running statistics of ``model`` in place.

    Statistics are reset, ``momentum`` is set to ``None`` (cumulative average of the batch
    statistics, as SWA's ``bn_update``), only BatchNorm layers are put in train mode (dropout and
    friends stay in eval), and ``batches`` (preprocessed ``(b, 3, h, w)`` tensors) are passed
    through once. Momentum and train/eval modes are restored afterwards.

    Returns:
        The number of BatchNorm layers updated (0: the model has none; nothing done).
    """
    layers = _batchnorm_modules(model)
    if not layers:
        return 0
    was_training = model.training
    momenta = {name: m.momentum for name, m in layers}
    model.eval()
    for _, m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    n_batches = 0
    for x in batches:
        model(x.to(device))
        n_batches += 1
    for name, m in layers:
        m.momentum = momenta[name]
        m.eval()
    model.train(was_training)
    if n_batches == 0:
        raise ValueError("recompute_batchnorm: no batches; the reset split is empty.")
    return len(layers)
