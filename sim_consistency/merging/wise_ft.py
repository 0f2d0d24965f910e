"""WiSE-FT: weight-space interpolation between a zero-shot and a fine-tuned model.

Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022, Eq. 1:
``θ_α = (1 − α) · θ_zeroshot + α · θ_finetuned``. ``α = 0`` is the zero-shot model, ``α = 1``
the fine-tuned one; the paper sweeps a grid of α (one variant entry per α here).

Conventions (:mod:`sim_consistency.merging.state`): float64 arithmetic, cast back; integer
buffers are copied from the fine-tuned model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from sim_consistency.errors import MergeError
from sim_consistency.merging.state import StateDict, check_compatible, is_mergeable

__all__ = ["wise_ft"]


def wise_ft(
    zeroshot: Mapping[str, torch.Tensor],
    finetuned: Mapping[str, torch.Tensor],
    alpha: float,
) -> StateDict:
    """Return ``(1 − alpha) · zeroshot + alpha · finetuned`` (WiSE-FT, Wortsman et al. 2022).

    The endpoints are exact: ``alpha = 0`` returns ``zeroshot``'s float tensors bit for bit and
    ``alpha = 1`` ``finetuned``'s. ``alpha`` outside [0, 1] extrapolates (allowed, as in the
    paper's Fig. 3).

    Raises:
        MergeError: the two models differ in keys, shapes or dtypes; ``alpha`` is not finite.
    """
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise MergeError(f"wise_ft: alpha must be a finite number (got {alpha}).")
    check_compatible(
        finetuned, zeroshot, where="wise_ft", reference_name="finetuned", other_name="zeroshot"
    )
    out: StateDict = {}
    for key, ft in finetuned.items():
        if not is_mergeable(ft):
            out[key] = ft.detach().clone()
        elif alpha == 0.0:
            out[key] = zeroshot[key].detach().clone()
        elif alpha == 1.0:
            out[key] = ft.detach().clone()
        else:
            zs = zeroshot[key].detach().to(torch.float64)
            out[key] = ((1.0 - alpha) * zs + alpha * ft.detach().to(torch.float64)).to(ft.dtype)
    return out
