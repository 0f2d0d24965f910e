"""One forward pass, every block: pooled block outputs (and logits) for a batch of images.

Forward hooks on the requested blocks pool each output in float32 on the model's device (see
:mod:`sim_consistency.features.pooling`), so a batch costs one forward pass plus a ``(b, d)``
copy per block. When the head is not needed the pass is cut short right after the last
requested block: its hook raises a private exception that :meth:`BlockExtractor.__call__`
catches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sim_consistency.features.pooling import pool_block_output

__all__ = ["BlockSpec", "BlockExtractor"]


@dataclass(frozen=True)
class BlockSpec:
    """How to hook and pool one block: module name, output layout, pooling, prefix tokens."""

    name: str
    layout: str
    pooling: str
    n_prefix_tokens: int = 0


class _StopForward(Exception):
    """Raised by the last block's hook to end a forward pass whose head is not needed."""


class BlockExtractor:
    """Hook ``blocks`` of ``model`` and return their pooled outputs per forward pass.

    Args:
        model: the network, in eval mode, on its device.
        blocks: the blocks to record, in forward order.
        with_logits: run the whole model and return its output as logits; when ``False`` the
            forward pass stops after the last block.

    Use as a context manager (hooks are removed on exit) or call :meth:`close`.
    """

    def __init__(self, model: nn.Module, blocks: Sequence[BlockSpec], *, with_logits: bool):
        if not blocks:
            raise ValueError("BlockExtractor needs at least one block")
        self.model = model
        self.blocks = list(blocks)
        self.with_logits = with_logits
        self._outputs: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        self._handles = []
        last = self.blocks[-1].name
        for spec in self.blocks:
            if spec.name not in modules:
                raise KeyError(f"model has no module named {spec.name!r}")
            stop = (not with_logits) and spec.name == last
            self._handles.append(modules[spec.name].register_forward_hook(self._hook(spec, stop)))

    def _hook(self, spec: BlockSpec, stop: bool):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            tensor = output
            while isinstance(tensor, tuple | list):
                tensor = tensor[0]
            self._outputs[spec.name] = pool_block_output(
                tensor,
                layout=spec.layout,
                pooling=spec.pooling,
                n_prefix_tokens=spec.n_prefix_tokens,
            )
            if stop:
                raise _StopForward

        return hook

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Run one batch; return ``({block: (b, d) float32}, logits (b, C) float32 | None)``."""
        self._outputs = {}
        logits = None
        try:
            out = self.model(images)
            if self.with_logits:
                logits = out
        except _StopForward:
            pass
        missing = [b.name for b in self.blocks if b.name not in self._outputs]
        if missing:
            raise RuntimeError(f"blocks {missing} were not called during the forward pass")
        pooled = _to_numpy({name: self._outputs[name] for name in (b.name for b in self.blocks)})
        self._outputs = {}
        if logits is not None:
            logits = logits.float().cpu().numpy()
        return pooled, logits

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> BlockExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_numpy(tensors: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Copy pooled outputs to host float32 arrays (one transfer per block)."""
    return {name: t.detach().to("cpu", torch.float32).numpy() for name, t in tensors.items()}
