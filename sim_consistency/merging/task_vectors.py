"""Task vectors: task arithmetic and TIES-merging.

A task vector is ``τ_i = θ_i − θ_base`` (Ilharco et al., "Editing models with task arithmetic",
ICLR 2023). Both methods return ``θ_base + λ · merge(τ_1, …, τ_n)``:

* :func:`task_arithmetic` — ``merge = Σ_i c_i τ_i`` (Ilharco et al., Eq. 1; negation is
  ``λ < 0`` or a negative ``c_i``, their Sec. 3).
* :func:`ties_merge` — Yadav et al., "TIES-Merging: resolving interference when merging
  models", NeurIPS 2023, Algorithm 1: (1) *trim* each τ_i to its ``keep`` fraction of
  largest-magnitude entries, (2) *elect* a sign per entry, ``sign(Σ_i τ̂_i)``, (3) *disjoint
  mean* of the trimmed entries that agree with the elected sign. As in the authors' code
  (``ties_merging_utils.py``): trimming keeps entries with ``|τ| ≥`` the ``(d − ⌊d·keep⌋)``-th
  smallest magnitude, computed over the whole flattened model (``scope="global"``, the paper)
  or per tensor (``scope="per_tensor"``); an entry whose summed sign is 0 takes the model-wide
  majority sign (``sign`` of the sum of all elected signs, the authors' ``resolve_zero_signs``);
  entries with no agreeing contributor stay at the base value.

Zero-sign election when the model-wide majority is also 0 (the elected signs cancel, e.g. two
exactly opposite task vectors): here such entries elect **+1** and average their positive
contributions. The references differ there: the authors' code leaves the sign at 0 and its
``disjoint_merge`` (``where(sign > 0, τ > 0, τ < 0)``) then averages the *negative* entries,
i.e. it elects −1 in effect; mergekit's ``get_mask`` has no model-wide majority step and elects
+1 for every entry whose summed value is ≥ 0. We follow mergekit's +1 for this corner only;
everywhere else the result equals the authors' code.

Conventions (:mod:`sim_consistency.merging.state`): every floating-point tensor is a task-vector
entry (BatchNorm running statistics included); integer buffers are copied from the base.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch

from sim_consistency.errors import MergeError
from sim_consistency.merging.state import StateDict, check_compatible, is_mergeable

__all__ = ["task_arithmetic", "ties_merge", "task_vector"]


def _check(base: Mapping, finetuned_list: Sequence[Mapping], where: str) -> None:
    if len(finetuned_list) == 0:
        raise MergeError(f"{where}: the list of fine-tuned models is empty; pass at least one.")
    for i, ft in enumerate(finetuned_list):
        check_compatible(base, ft, where=where, reference_name="base", other_name=f"finetuned #{i}")


def task_vector(
    base: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Return ``finetuned − base`` (float64) for every floating-point tensor."""
    return {
        k: finetuned[k].detach().to(torch.float64) - v.detach().to(torch.float64)
        for k, v in base.items()
        if is_mergeable(v)
    }


def task_arithmetic(
    base: Mapping[str, torch.Tensor],
    finetuned_list: Sequence[Mapping[str, torch.Tensor]],
    lam: float = 1.0,
    coeffs: Sequence[float] | None = None,
) -> StateDict:
    """Return ``base + lam · Σ_i coeffs_i · (finetuned_i − base)`` (Ilharco et al. 2023).

    Args:
        base: the pre-trained weights θ_base.
        finetuned_list: fine-tuned weights θ_i, same architecture.
        lam: scaling λ; negative values negate the task (forgetting).
        coeffs: per-task coefficients (default 1 each).

    Raises:
        MergeError: empty list, incompatible models, coefficient count mismatch.
    """
    _check(base, finetuned_list, "task_arithmetic")
    coeffs = [1.0] * len(finetuned_list) if coeffs is None else [float(c) for c in coeffs]
    if len(coeffs) != len(finetuned_list):
        raise MergeError(
            f"task_arithmetic: {len(finetuned_list)} fine-tuned models but {len(coeffs)} coeffs."
        )
    out: StateDict = {}
    for key, b in base.items():
        if not is_mergeable(b):
            out[key] = b.detach().clone()
            continue
        b64 = b.detach().to(torch.float64)
        total = torch.zeros_like(b64)
        for c, ft in zip(coeffs, finetuned_list, strict=True):
            total.add_(ft[key].detach().to(torch.float64) - b64, alpha=c)
        out[key] = (b64 + float(lam) * total).to(b.dtype)
    return out


def _trim_threshold(magnitudes: torch.Tensor, keep: float) -> float:
    """The authors' ``topk_values_mask`` threshold: the ``(d − ⌊d·keep⌋)``-th smallest value."""
    d = magnitudes.numel()
    k = d - int(d * keep)
    if k <= 0 or d == 0:
        return -math.inf  # keep everything
    return float(magnitudes.kthvalue(k).values)


def ties_merge(
    base: Mapping[str, torch.Tensor],
    finetuned_list: Sequence[Mapping[str, torch.Tensor]],
    keep: float = 0.2,
    lam: float = 1.0,
    scope: Literal["global", "per_tensor"] = "global",
) -> StateDict:
    """Return the TIES merge ``base + lam · disjoint_mean(elect(trim(τ_i)))`` (Yadav et al. 2023).

    Args:
        base: pre-trained weights.
        finetuned_list: fine-tuned weights, same architecture.
        keep: fraction (0, 1] of each task vector's entries kept by magnitude (paper: 0.2).
        lam: scaling λ of the merged task vector (paper: 1).
        scope: ``"global"`` ranks magnitudes over the whole model (the paper);
            ``"per_tensor"`` within each tensor.

    Raises:
        MergeError: empty list, incompatible models, ``keep`` outside (0, 1], unknown scope.
    """
    _check(base, finetuned_list, "ties_merge")
    if not 0.0 < float(keep) <= 1.0:
        raise MergeError(f"ties_merge: keep must be in (0, 1] (got {keep}).")
    if scope not in ("global", "per_tensor"):
        raise MergeError(f"ties_merge: scope must be 'global' or 'per_tensor' (got {scope!r}).")
    keys = [k for k, v in base.items() if is_mergeable(v)]
    vectors = [task_vector(base, ft) for ft in finetuned_list]

    # (1) trim
    if scope == "global":
        thresholds = [
            _trim_threshold(torch.cat([tv[k].abs().reshape(-1) for k in keys]), keep)
            for tv in vectors
        ]
        for tv, thr in zip(vectors, thresholds, strict=True):
            for k in keys:
                tv[k] = tv[k] * (tv[k].abs() >= thr)
    else:
        for tv in vectors:
            for k in keys:
                thr = _trim_threshold(tv[k].abs().reshape(-1), keep)
                tv[k] = tv[k] * (tv[k].abs() >= thr)

    # (2) elect: sign of the summed trimmed vectors; zeros take the model-wide majority sign,
    # and +1 when that is 0 too (module docstring: the authors' code elects -1 there in effect)
    elected = {
        k: torch.sign(sum((tv[k] for tv in vectors), torch.zeros_like(vectors[0][k]))) for k in keys
    }
    majority = torch.sign(sum(float(e.sum()) for e in elected.values()) * torch.ones(()))
    if float(majority) == 0.0:
        majority = torch.ones((), dtype=torch.float64)

    # (3) disjoint mean
    out: StateDict = {}
    for key, b in base.items():
        if not is_mergeable(b):
            out[key] = b.detach().clone()
            continue
        sign = torch.where(elected[key] == 0, majority, elected[key])
        stacked = torch.stack([tv[key] for tv in vectors])
        agree = torch.where(sign > 0, stacked > 0, stacked < 0)
        selected = stacked * agree
        count = agree.sum(dim=0).clamp(min=1)
        merged = selected.sum(dim=0) / count
        out[key] = (b.detach().to(torch.float64) + float(lam) * merged).to(b.dtype)
    return out
