"""Reading state dicts from checkpoint files, and digesting them by content.

:func:`load_state_dict_file` turns the checkpoint layouts found in the wild into one flat
``{name: tensor}`` dict:

* ``.safetensors`` files (read with safetensors) and torch pickles (``.pt``, ``.pth``, ``.bin``,
  …, read with ``torch.load(weights_only=True)``: no arbitrary code runs);
* training containers — ``{"state_dict": …}``, ``{"model": …}``, ``{"model_state_dict": …}``,
  ``{"module": …}``, nested — are unwrapped, and DDP's ``module.`` prefix is stripped;
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

#: Keys under which training scripts nest the model's state dict, tried in this order.
CONTAINER_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "module")

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
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw: object = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ConfigError(
                f"{path}: not a readable safetensors file ({exc}). Re-save it with "
                "safetensors.torch.save_file(state_dict, path)."
            ) from exc
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"GLOBAL (\S+)", str(exc))
            if found is None:
                raise ConfigError(
                    f"{path}: not a readable torch checkpoint ({_unpickler_reason(exc)}). "
                    "Use a .pt/.pth/.bin file written by torch.save or a .safetensors file."
                ) from exc
            raise ConfigError(
                f"{path}: cannot be loaded with torch.load(weights_only=True): it pickles "
                f"objects other than tensors (got {found.group(1)}). Re-save only the weights: "
                "torch.save(model.state_dict(), path), or safetensors' save_file."
            ) from exc
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            raise ConfigError(
                f"{path}: not a readable torch checkpoint ({str(exc).splitlines()[0]}). "
                "Use a .pt/.pth/.bin file written by torch.save or a .safetensors file."
            ) from exc
    return normalize_state_dict(raw, where=str(path))


def _unpickler_reason(exc: Exception) -> str:
    """The useful line of torch's weights-only unpickling error."""
    text = str(exc)
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    return found.group(1).strip() if found else text.splitlines()[0]


def normalize_state_dict(raw: object, *, where: str = "state dict") -> dict[str, torch.Tensor]:
    """Return the flat tensor dict inside a loaded checkpoint object.

    Unwraps :data:`CONTAINER_KEYS` containers (repeatedly), strips a ``module.`` prefix shared
    by every key, and renames model-soups checkpoints (see the module docstring).

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
    sd = {str(k): v for k, v in state.items()}
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
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
