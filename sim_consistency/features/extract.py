"""One forward pass, every block: pooled block outputs (and logits) for a batch of images.

Forward hooks on the requested blocks pool each output in float32 on the model's device (see
:mod:`sim_consistency.features.pooling`), so a batch costs one forward pass plus a ``(b, d)``
copy per block. When the head is not needed the pass is cut short as soon as every requested
block has run: that hook raises a private exception that :meth:`BlockExtractor.__call__`
catches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sim_consistency.features.cache import FeatureCacheWriter
from sim_consistency.features.pooling import pool_block_output, rep2rep_representation

__all__ = ["BlockSpec", "BlockExtractor", "PendingBatch", "write_features"]


@dataclass(frozen=True)
class BlockSpec:
    """How to hook and pool one block: module name, output layout, pooling, prefix tokens.

    ``layout == "rep2rep"`` stores Rep2Rep's representation of module ``module`` under ``name``
    (:func:`~sim_consistency.features.pooling.rep2rep_representation`, with ``pooling`` the
    token extraction or ``flatten``).
    """

    name: str
    layout: str
    pooling: str
    n_prefix_tokens: int = 0
    module: str | None = None

    @property
    def module_name(self) -> str:
        """The hooked module (``module``, else ``name``)."""
        return self.module or self.name


class _StopForward(Exception):
    """Raised by the last block's hook to end a forward pass whose head is not needed."""


class BlockExtractor:
    """Hook ``blocks`` of ``model`` and return their pooled outputs per forward pass.

    Args:
        model: the network, in eval mode, on its device.
        blocks: the blocks to record, in forward order.
        with_logits: run the whole model and return its output as logits; when ``False`` the
            forward pass stops once every block has run.

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
        for spec in self.blocks:
            if spec.module_name not in modules:
                raise KeyError(f"model has no module named {spec.module_name!r}")
            hook = self._hook(spec, stop=not with_logits)
            self._handles.append(modules[spec.module_name].register_forward_hook(hook))

    def _hook(self, spec: BlockSpec, stop: bool):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            tensor = output
            while isinstance(tensor, tuple | list):
                tensor = tensor[0]
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(
                    f"block {spec.name!r}: output is a {type(tensor).__name__}, not a tensor."
                )
            if spec.layout == "rep2rep":
                token = None if spec.pooling == "flatten" else spec.pooling
                pooled = rep2rep_representation(tensor, token_extraction=token)
            else:
                pooled = pool_block_output(
                    tensor,
                    layout=spec.layout,
                    pooling=spec.pooling,
                    n_prefix_tokens=spec.n_prefix_tokens,
                )
            self._outputs[spec.name] = pooled
            if stop and len(self._outputs) == len(self.blocks):
                raise _StopForward  # every block recorded and no head needed

        return hook

    def submit(self, images: torch.Tensor) -> PendingBatch:
        """Launch one batch; return a handle whose :meth:`PendingBatch.result` waits for it.

        On CUDA the pooled blocks (and logits) are concatenated on the device and copied to
        pinned host memory with one non-blocking transfer, so the caller can write the previous
        batch to disk while this one is computed. On the CPU the work is done on return.
        """
        self._outputs = {}
        logits = None
        with torch.inference_mode():
            try:
                out = self.model(images)
                if self.with_logits:
                    logits = out
            except _StopForward:
                pass
            missing = [b.name for b in self.blocks if b.name not in self._outputs]
            if missing:
                raise RuntimeError(f"blocks {missing} were not called during the forward pass")
            parts = [self._outputs[b.name] for b in self.blocks]
            widths = [p.shape[1] for p in parts]
            if logits is not None:
                parts.append(logits.float())
            flat = torch.cat(parts, dim=1)
        self._outputs = {}
        event = None
        if flat.is_cuda:
            host = torch.empty(flat.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(flat, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host = flat
        return PendingBatch(host, event, [b.name for b in self.blocks], widths, logits is not None)

    def __call__(self, images: torch.Tensor) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Run one batch; return ``({block: (b, d) float32}, logits (b, C) float32 | None)``."""
        return self.submit(images).result()

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> BlockExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PendingBatch:
    """Pooled outputs of one batch on their way to host memory (see BlockExtractor.submit)."""

    def __init__(
        self,
        host: torch.Tensor,
        event: torch.cuda.Event | None,
        names: list[str],
        widths: list[int],
        has_logits: bool,
    ) -> None:
        self._host = host
        self._event = event
        self._names = names
        self._widths = widths
        self._has_logits = has_logits

    def result(self) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Wait for the transfer; return ``({block: (b, d) float32}, logits | None)``."""
        if self._event is not None:
            self._event.synchronize()
        flat = self._host.numpy()
        blocks: dict[str, np.ndarray] = {}
        start = 0
        for name, width in zip(self._names, self._widths, strict=True):
            blocks[name] = flat[:, start : start + width]
            start += width
        logits = flat[:, start:] if self._has_logits else None
        return blocks, logits


def write_features(
    extractor: BlockExtractor,
    batches: Iterable[tuple[Sequence[str], np.ndarray, torch.Tensor]],
    writer: FeatureCacheWriter,
    *,
    device: torch.device,
    on_rows: Callable[[int], None] | None = None,
) -> int:
    """Run every batch through ``extractor`` and append the results to ``writer``.

    Batch ``i`` is written while batch ``i + 1`` runs on the device (a one-batch pipeline), so
    on a GPU the HDF5 writes overlap the forward passes.

    Args:
        extractor: hooks on the model's blocks.
        batches: ``(keys, labels, images)`` in row order; images on any device.
        writer: the open cache file.
        device: the model's device (images are moved there without blocking).
        on_rows: called with the number of rows after each batch is written (progress).

    Returns:
        The number of rows written.
    """
    pending = None
    n_rows = 0

    def flush(item: tuple[PendingBatch, Sequence[str], np.ndarray]) -> None:
        nonlocal n_rows
        result, keys, labels = item
        pooled, logits = result.result()
        writer.append(keys, labels, pooled, logits)
        n_rows += len(keys)
        if on_rows is not None:
            on_rows(len(keys))

    for keys, labels, images in batches:
        launched = (extractor.submit(images.to(device, non_blocking=True)), keys, labels)
        if pending is not None:
            flush(pending)
        pending = launched
    if pending is not None:
        flush(pending)
    return n_rows
