"""One forward pass, every block: pooled block outputs (and logits) for a batch of images.

Forward hooks on the requested blocks pool each output in float32 on the model's device (see
:mod:`sim_consistency.features.pooling`), so a batch costs one forward pass plus a ``(b, d)``
copy per block. When the head is not needed the pass is cut short as soon as every requested
block has run: that hook raises a private exception that :meth:`BlockExtractor.__call__`
catches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from sim_consistency.errors import ConfigError, DataError
from sim_consistency.features.cache import FeatureCacheWriter
from sim_consistency.features.pooling import pool_block_output, rep2rep_representation

__all__ = [
    "BlockSpec",
    "BlockExtractor",
    "PendingBatch",
    "write_features",
    "DeviceDecoder",
    "DECODE_TOLERANCE",
    "DECODE_MEAN_TOLERANCE",
]


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


# -- decoding and preprocessing on the model's device -----------------------------------------

#: Largest difference, in [0, 1] pixel units before normalisation, between
#: :class:`DeviceDecoder` and the PIL eval transform on the same image (measured on CPU on
#: photograph-like JPEG/PNG images of 32-500 px with hard edges). JPEG decoding itself is
#: identical on CPU (both libjpeg-turbo); the resize differs: ≤ 1/255 when downscaling, up to
#: ~9/255 at hard edges when bicubic *up*scaling (torch's and PIL's bicubic kernels overshoot
#: differently), while the mean difference stays ≤ 0.2/255 (:data:`DECODE_MEAN_TOLERANCE`).
#: nvJPEG's IDCT on CUDA may add a level or two (not measured: no GPU was available).
DECODE_TOLERANCE = 12 / 255
DECODE_MEAN_TOLERANCE = 0.4 / 255

_JPEG_MAGIC = (0xFF, 0xD8)
_IDENTITY_STEPS = ("_convert_to_rgb", "convert_to_rgb", "MaybeToTensor", "ToTensor")


class DeviceDecoder:
    """Decode encoded images and apply a model's eval transform on ``device``, in torch.

    ``transform`` is the model's PIL eval transform (a torchvision ``Compose``); each step is
    mapped to the same operation on tensors: ``Resize`` → antialiased resize of the float
    image to the same output size, rounded to 8-bit levels as PIL's uint8 result is;
    ``CenterCrop``; ``ToTensor`` / ``MaybeToTensor`` → ``/ 255``; ``Normalize`` with the same
    mean and std; RGB conversion is the decode mode. Any other step raises
    :class:`~sim_consistency.errors.ConfigError` (never a silently different preprocessing).
    JPEGs decode with ``torchvision.io.decode_jpeg`` on ``device`` (nvJPEG on CUDA, batched);
    other formats with ``decode_image`` on the CPU, then move. Equal to the PIL pipeline within
    :data:`DECODE_TOLERANCE` (largest) and :data:`DECODE_MEAN_TOLERANCE` (mean) per pixel
    (``tests/features/test_device_decode.py``).
    """

    def __init__(self, transform: Callable[..., Any], device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
        self.is_scaled = False
        for step in getattr(transform, "transforms", [transform]):
            self.steps.append(self._tensor_step(step))
        if not self.is_scaled:
            self.steps.append(lambda x: x / 255.0)

    def _tensor_step(self, step: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        from torchvision.transforms import functional as F

        name = getattr(step, "__name__", type(step).__name__)
        if name == "Resize":
            size, interp = step.size, step.interpolation
            max_size = getattr(step, "max_size", None)
            on_levels = not self.is_scaled  # PIL resizes 8-bit images: round like it

            def resize(x: torch.Tensor) -> torch.Tensor:
                y = F.resize(x, size, interpolation=interp, max_size=max_size, antialias=True)
                return y.round_().clamp_(0.0, 255.0) if on_levels else y

            return resize
        if name == "CenterCrop":
            return lambda x: F.center_crop(x, step.size)
        if name in ("ToTensor", "MaybeToTensor"):
            self.is_scaled = True
            return lambda x: x / 255.0
        if name == "Normalize":
            mean = torch.as_tensor(step.mean, dtype=torch.float32, device=self.device)[
                :, None, None
            ]
            std = torch.as_tensor(step.std, dtype=torch.float32, device=self.device)[:, None, None]
            return lambda x: (x - mean) / std
        if name in _IDENTITY_STEPS or (
            name == "MaybeConvertMode" and getattr(step, "mode", "RGB") in ("RGB", None)
        ):
            return lambda x: x  # images are decoded as RGB
        raise ConfigError(
            f"decode_device: the model's eval transform has a step {name!r} that has no tensor "
            "equivalent here (supported: Resize, CenterCrop, ToTensor, Normalize, RGB "
            "conversion). Use --decode_device cpu for this model."
        )

    def decode(self, encoded: Sequence[torch.Tensor], keys: Sequence[str]) -> list[torch.Tensor]:
        """Return each encoded image as a (3, h, w) uint8 RGB tensor on the device."""
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg

        is_jpeg = [len(e) > 2 and tuple(e[:2].tolist()) == _JPEG_MAGIC for e in encoded]
        out: list[Any] = [None] * len(encoded)
        jpegs = [i for i, j in enumerate(is_jpeg) if j]
        try:
            if jpegs:
                decoded = decode_jpeg(
                    [encoded[i] for i in jpegs], mode=ImageReadMode.RGB, device=self.device
                )
                for i, image in zip(jpegs, decoded, strict=True):
                    out[i] = image
            for i, j in enumerate(is_jpeg):
                if not j:
                    out[i] = decode_image(encoded[i], mode=ImageReadMode.RGB).to(self.device)
        except RuntimeError as exc:
            bad = next((k for k, e in zip(keys, encoded, strict=True) if not _decodes(e)), None)
            raise DataError(
                f"cannot decode the image of sample '{bad or keys[0]}' on {self.device} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}). The file is corrupt: "
                "re-download or rebuild the dataset."
            ) from exc
        return out

    def __call__(self, encoded: Sequence[torch.Tensor], keys: Sequence[str]) -> torch.Tensor:
        """Return the preprocessed batch, (b, 3, h, w) float32 on the device."""
        images = []
        for image in self.decode(encoded, keys):
            x = image.float()
            for step in self.steps:
                x = step(x)
            images.append(x)
        return torch.stack(images)

    def batches(
        self, batches: Iterable[tuple[Sequence[str], np.ndarray, Sequence[torch.Tensor]]]
    ) -> Iterator[tuple[Sequence[str], np.ndarray, torch.Tensor]]:
        """Map ``(keys, labels, encoded images)`` batches to ``(keys, labels, images)``."""
        for keys, labels, encoded in batches:
            yield keys, labels, self(encoded, keys)


def _decodes(encoded: torch.Tensor) -> bool:
    from torchvision.io import decode_image

    try:
        decode_image(encoded)
        return True
    except RuntimeError:
        return False
