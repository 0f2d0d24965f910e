"""State-dict conventions shared by every merge method.

A *state dict* here is ``{name: tensor}`` as returned by ``nn.Module.state_dict()``. The
conventions every method in :mod:`sim_consistency.merging` follows:

* Only floating-point tensors are merged. Integer and boolean buffers (BatchNorm's
  ``num_batches_tracked``, index buffers) are never averaged: they are copied from a designated
  input (the first ingredient, the base or the finetuned model — each method says which).
* Arithmetic is carried out in float64 and the result cast back to the input dtype, so merging
  float16/bfloat16 weights loses no more than one final rounding.
* Inputs must share keys, shapes and dtypes; a mismatch is a :class:`MergeError` naming the
  offending input and tensor.
* A result containing NaN or inf is a :class:`MergeError` naming the tensor
  (:func:`check_finite`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from sim_consistency.errors import MergeError
from sim_consistency.finite import check_finite as _check_tensor

__all__ = ["StateDict", "is_mergeable", "check_compatible", "check_finite", "float_keys"]

StateDict = dict[str, torch.Tensor]


def is_mergeable(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` takes part in arithmetic (floating point) or is copied (integer, bool)."""
    return tensor.is_floating_point() or tensor.is_complex()


def float_keys(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point entries of ``state_dict``, in its order."""
    return [k for k, v in state_dict.items() if is_mergeable(v)]


def check_compatible(
    reference: Mapping[str, torch.Tensor],
    other: Mapping[str, torch.Tensor],
    *,
    where: str,
    reference_name: str,
    other_name: str,
) -> None:
    """Raise unless ``other`` has exactly ``reference``'s keys, shapes and dtypes.

    Raises:
        MergeError: naming ``where``, both inputs and the first offending tensors.
    """
    missing = [k for k in reference if k not in other]
    extra = [k for k in other if k not in reference]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}")
        if extra:
            parts.append(f"extra {', '.join(extra[:3])}{', …' if len(extra) > 3 else ''}")
        raise MergeError(
            f"{where}: '{other_name}' has different tensors than '{reference_name}' "
            f"({'; '.join(parts)}). Ingredients must share one architecture."
        )
    for key, ref in reference.items():
        value = other[key]
        if tuple(value.shape) != tuple(ref.shape):
            raise MergeError(
                f"{where}: tensor '{key}' of '{other_name}' has shape {tuple(value.shape)} but "
                f"'{reference_name}' has {tuple(ref.shape)}. Ingredients must share one "
                "architecture (and head size)."
            )
        if value.dtype != ref.dtype:
            raise MergeError(
                f"{where}: tensor '{key}' of '{other_name}' is {value.dtype} but "
                f"'{reference_name}' has {ref.dtype}. Cast the ingredients to one dtype first."
            )


def check_finite(state_dict: Mapping[str, torch.Tensor], *, where: str) -> None:
    """Raise if any floating-point tensor of ``state_dict`` holds NaN or inf.

    Raises:
        NonFiniteError: naming ``where`` and the first non-finite tensor.
    """
    for key, value in state_dict.items():
        if is_mergeable(value):
            _check_tensor(
                value,
                f"{where}: the result's tensor '{key}'",
                hint="Check the ingredients (are they finite?) and the coefficients.",
            )
