"""Distances between weight vectors of one architecture (how far fine-tuning moved a model)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from sim_consistency.errors import MergeError

__all__ = ["weight_distance"]


def weight_distance(
    weights: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor],
    names: Sequence[str],
) -> dict[str, float]:
    """Return the L2 distance between two models' weights over ``names``, absolute and relative.

    Every tensor is flattened and accumulated in float64: ``l2 = ||w - w_ref||_2`` over the
    concatenation of the named tensors, ``relative = l2 / ||w_ref||_2``.

    Args:
        weights: state dict of the model measured.
        reference: state dict it is measured from (same keys and shapes for ``names``).
        names: the tensors compared, usually the model's parameters (``named_parameters``),
            which leaves BatchNorm running statistics out.

    Raises:
        MergeError: a name is missing or shapes differ.
    """
    diff_sq, ref_sq = 0.0, 0.0
    for name in names:
        if name not in weights or name not in reference:
            raise MergeError(f"weight_distance: tensor '{name}' is missing from one state dict.")
        a, b = weights[name].detach().double(), reference[name].detach().double()
        if a.shape != b.shape:
            raise MergeError(
                f"weight_distance: '{name}' has shape {tuple(a.shape)} vs {tuple(b.shape)}."
            )
        diff_sq += float(torch.sum((a - b) ** 2))
        ref_sq += float(torch.sum(b**2))
    l2 = math.sqrt(diff_sq)
    return {"l2": l2, "relative": l2 / math.sqrt(ref_sq) if ref_sq > 0 else math.inf}
