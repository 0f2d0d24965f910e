"""Reading state dicts from checkpoint files, and digesting them by content.

:func:`load_state_dict_file` turns the checkpoint layouts found in the wild into one flat
``{name: tensor}`` dict:

* files are read by timm's :func:`timm.models.load_state_dict`: ``.safetensors`` files and
  torch pickles (``.pt``, ``.pth``, ``.bin``, …) through ``torch.load(weights_only=True)`` (no
  arbitrary code runs; timm allows ``argparse.Namespace``, which its training checkpoints hold
  under ``args``). Like timm, a checkpoint holding EMA weights (``state_dict_ema`` or
  ``model_ema``) yields the **EMA weights**, else ``state_dict`` or ``model``;
* further training containers — ``{"model_state_dict": …}``, ``{"module": …}``, nested — are
  unwrapped, and the wrapper prefixes of DDP (``module.``) and ``torch.compile``
  (``_orig_mod.``), in either order, are stripped (timm's ``clean_state_dict``);
* model-soups checkpoints (Wortsman et al., 2022: ``ModelWrapper`` state dicts with
  ``model.visual.*`` + ``classification_head.{weight,bias}`` and left-over text-tower keys) are
  renamed to ``visual.*`` + ``classification_head.*``, the layout of
  :class:`~sim_consistency.models.classifier.ImageClassifier`; text-tower keys are dropped.

:func:`state_dict_sha256` digests the *content* (names, dtypes, shapes, bytes), so the same
weights saved twice, or in another file format, get the same digest — the ``weights_sha256``
that feature-cache content keys are built from.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from sim_consistency.errors import ConfigError, MissingInputError

__all__ = [
    "CONTAINER_KEYS",
    "is_model_soups_state_dict",
    "load_state_dict_file",
    "normalize_state_dict",
    "state_dict_sha256",
]

#: Keys under which training scripts nest the model's state dict, tried in this order (EMA
#: weights first, as timm's ``load_state_dict(use_ema=True)`` does).
CONTAINER_KEYS: tuple[str, ...] = (
    "state_dict_ema",
    "model_ema",
    "state_dict",
    "model_state_dict",
    "model",
    "module",
)

_SOUPS_VISUAL = "model.visual."
_SOUPS_HEAD = "classification_head."


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Return the flat state dict stored in ``path`` (on the CPU, in file order).

    Args:
        path: a ``.safetensors`` file or a torch pickle (``.pt``, ``.pth``, ``.bin``, …).

    Returns:
        ``{name: tensor}`` after :func:`normalize_state_dict`.

    Raises:
        MissingInputError: the file does not exist.
        ConfigError: the file cannot be read, or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(
            f"{path}: checkpoint file not found. Check the 'path'/'weights' key."
        )
    from timm.models import load_state_dict

    try:
        raw: object = load_state_dict(str(path), use_ema=True, device="cpu", weights_only=True)
    except Exception as exc:  # safetensors, pickle and torch errors: all "unreadable"
        raise _unreadable(path, exc) from exc
    return normalize_state_dict(raw, where=str(path))


def _unreadable(path: Path, exc: Exception) -> ConfigError:
    """The error for a checkpoint file timm's loader could not read, naming why."""
    if path.suffix == ".safetensors":
        return ConfigError(
            f"{path}: not a readable safetensors file ({exc}). Re-save it with "
            "safetensors.torch.save_file(state_dict, path)."
        )
    cause = exc.__cause__ if isinstance(exc.__cause__, pickle.UnpicklingError) else exc
    found = re.search(r"GLOBAL (\S+)", str(cause))
    if found is not None:
        return ConfigError(
            f"{path}: cannot be loaded with torch.load(weights_only=True): it pickles "
            f"objects other than tensors (got {found.group(1)}). Re-save only the weights: "
            "torch.save(model.state_dict(), path), or safetensors' save_file."
        )
    reason = _unpickler_reason(cause) if isinstance(cause, pickle.UnpicklingError) else exc
    return ConfigError(
        f"{path}: not a readable torch checkpoint ({str(reason).splitlines()[0] if str(reason) else type(exc).__name__}). "
        "Use a .pt/.pth/.bin file written by torch.save or a .safetensors file."
    )


def _unpickler_reason(exc: Exception) -> str:
    """The useful line of torch's weights-only unpickling error."""
    text = str(exc)
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    return found.group(1).strip() if found else text.splitlines()[0]


def normalize_state_dict(raw: object, *, where: str = "state dict") -> dict[str, torch.Tensor]:
    """Return the flat tensor dict inside a loaded checkpoint object.

    Unwraps :data:`CONTAINER_KEYS` containers (repeatedly, EMA weights first), strips DDP's
    ``module.`` and ``torch.compile``'s ``_orig_mod.`` prefixes (timm's ``clean_state_dict``),
    and renames model-soups checkpoints (see the module docstring).

    Args:
        raw: what ``torch.load`` / safetensors returned.
        where: the file name, for error messages.

    Raises:
        ConfigError: ``raw`` holds no state dict, or entries that are not tensors.
    """
    state = raw
    while isinstance(state, Mapping) and not _all_tensors(state):
        inner = next((state[k] for k in CONTAINER_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping) or not state:
        raise ConfigError(
            f"{where}: holds no state dict (got {type(raw).__name__}"
            + (
                f" with keys {', '.join(map(str, list(raw)[:8]))}"
                if isinstance(raw, Mapping)
                else ""
            )
            + f"). Expected {{name: tensor}}, possibly under one of {', '.join(CONTAINER_KEYS)}."
        )
    not_tensors = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ConfigError(
            f"{where}: entries {', '.join(not_tensors[:5])} are not tensors (got "
            f"{len(not_tensors)} such entries of {len(state)}). Save model.state_dict() only."
        )
    from timm.models import clean_state_dict

    sd = clean_state_dict({str(k): v for k, v in state.items()})
    if len(sd) < len(state):
        raise ConfigError(
            f"{where}: keys collide once the module./_orig_mod. wrapper prefixes are removed "
            f"({len(state)} keys → {len(sd)}). Save the unwrapped model's state_dict()."
        )
    if is_model_soups_state_dict(sd):
        sd = {
            ("visual." + k[len(_SOUPS_VISUAL) :] if k.startswith(_SOUPS_VISUAL) else k): v
            for k, v in sd.items()
            if k.startswith(_SOUPS_VISUAL) or k.startswith(_SOUPS_HEAD)
        }
    return sd


def _all_tensors(state: Mapping) -> bool:
    return all(isinstance(v, torch.Tensor) for v in state.values())


def is_model_soups_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` is a model-soups ``ModelWrapper`` checkpoint.

    Those hold a CLIP model under ``model.`` (vision tower under ``model.visual.``, text-tower
    leftovers such as ``model.token_embedding.weight``) and a linear
    ``classification_head.{weight,bias}``; every key has one of those two prefixes.
    """
    keys = list(state_dict)
    return (
        any(k.startswith(_SOUPS_VISUAL) for k in keys)
        and f"{_SOUPS_HEAD}weight" in state_dict
        and all(k.startswith("model.") or k.startswith(_SOUPS_HEAD) for k in keys)
    )


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Return the hex SHA-256 of a state dict's content.

    Hashes, for every entry in sorted name order, its name, dtype, shape and raw bytes (CPU,
    contiguous, native byte order), so the digest depends on the weights only — not on the
    file format, key order or device.

    Raises:
        TypeError: an entry is not a tensor.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name]
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(
                f"state_dict_sha256: entry {name!r} is not a tensor (got {type(tensor).__name__})."
            )
        tensor = tensor.detach().to("cpu").contiguous()
        header = f"{name}\0{str(tensor.dtype).removeprefix('torch.')}\0{tuple(tensor.shape)}\0"
        digest.update(header.encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()
