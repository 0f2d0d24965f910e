"""MonoSoup: a spectral edit of one fine-tuned model towards its pre-trained base.

MonoSoup (its paper and public code, ``MonoSoup.py`` / ``Convnext_freevariance_vetterli.py``)
splits each layer's update ``ΔW = W1 − W0`` by a thin SVD into the top-``k`` directions
``ΔW_high = U_k Σ_k V_kᵀ`` and the rest ``ΔW_low = ΔW − ΔW_high``, and re-mixes them:

* ``monosoup = W0 + λ_high · ΔW_high + λ_low · ΔW_low``
* ``highonly = W0 + ΔW_high`` and ``lowonly = W0 + ΔW_low`` (the two ablations).

Which tensors are edited: every floating-point *parameter* with ≥ 2 dimensions whose relative
update ``‖ΔW‖_F / ‖W0‖_F`` is ``≥ min_rel_update``. Buffers are not edited by default — all
reference scripts loop over ``named_parameters()`` — and are listed as skipped with the reason
(``include_buffers=True`` edits changed ≥ 2-D float buffers like parameters). A state dict does
not say which entries are buffers: the caller passes their names (``buffer_names``; the variant
builder takes them from the model's ``named_buffers()``). Conv kernels are flattened to
``[out, −1]``; fused attention projections (``qkv.weight``, ``in_proj_weight``) stay one
matrix. Every other tensor (biases, norms, buffers, small updates) keeps ``W1``'s value (the
reference behaviour) or, with ``untouched_from="base"``, ``W0``'s.

The reference scripts differ in their defaults; the models config picks one by name with
``"preset"`` (:data:`~sim_consistency.config.models.MONOSOUP_PRESETS`: ``clip`` =
``MonoSoup.py``: freevariance, R 0.8, min_rel_update 1e-6; ``convnext`` =
``Convnext_freevariance_vetterli.py``: vetterli, R 0.9, 1e-2; ``convnext_cka`` =
``CKA_ConvNext.py``: vetterli, R 0.8, 1e-2), explicit keys overriding it.

Rank ``k`` (1 ≤ k ≤ r, r = min(rows, cols)), with σ_1 ≥ … ≥ σ_r the singular values of ΔW:

* ``rank_rule="variance"``: the smallest k with ``Σ_{i≤k} σ_i² / Σ_i σ_i² ≥ R``.
* ``rank_rule="vetterli"`` (alias ``"freevariance"``): ``k = ⌈exp(H)⌉``, the Roy–Vetterli
  effective rank (Roy & Vetterli, "The effective rank", EUSIPCO 2007), ``H = −Σ p_i log p_i``
  with ``p_i = σ_i / Σ_j σ_j``.

Mixing: ``P_k = Σ_{i≤k} σ_i² / Σ σ_i²`` (the kept energy), ``ρ = (σ_{k+1} / σ_1)²`` (0 when
``k = r``), ``λ_low = ρ + (1 − ρ) · sqrt(1 − P_k)`` and ``λ_high = 1 − λ_low``.
``cos_alpha`` is the cosine between ``ΔW`` and ``ΔW_high``, which equals ``sqrt(P_k)`` (so
``sqrt(1 − P_k)`` is ``sin α``); it is measured, not derived, as a numerical check.

Computation (exact, float64): the singular values and the top-``k`` subspace come from the
eigendecomposition of the smaller Gram matrix (``ΔW ΔWᵀ`` when rows ≤ cols, else ``ΔWᵀ ΔW``):
its eigenvalues are σ², its eigenvectors the singular vectors of that side, and
``ΔW_high = U_k U_kᵀ ΔW`` (or ``ΔW V_k V_kᵀ``) is the same rank-k truncation a thin SVD gives.
One ``m×m`` ``eigh`` instead of a thin SVD of ``m×n`` is 2.6x faster than a per-layer float64
``torch.linalg.svd(full_matrices=False)`` loop and 1.4x faster than a float32 one on
convnext_tiny-sized weights (``benchmarks/merging.py``, CPU); float64 keeps σ accurate to
~1e-8·σ_1, far below what changes k or λ; eigenvalues below the Gram's rounding level
``λ_max·max(rows, cols)·ε`` count as 0. Everything is computed on ``device`` and cast back
to ``W1``'s dtype at the end.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from sim_consistency.config.variants import RANK_RULES, RankRule
from sim_consistency.errors import MergeError
from sim_consistency.finite import check_finite
from sim_consistency.merging.state import StateDict, check_compatible, is_mergeable

__all__ = [
    "MonoSoupResult",
    "monosoup",
    "spectral_split",
    "select_rank",
    "mixing_coefficients",
    "effective_rank",
    "RANK_RULES",
    "RankRule",
]


@dataclass
class MonoSoupResult:
    """The three MonoSoup state dicts and the per-parameter statistics.

    Attributes:
        monosoup: ``W0 + λ_high ΔW_high + λ_low ΔW_low`` on edited tensors.
        highonly: ``W0 + ΔW_high`` on edited tensors.
        lowonly: ``W0 + ΔW_low`` on edited tensors.
        layers: one dict per state-dict entry, in order: ``name, edited, skip_reason, shape,
            rows, cols, r, k, P_k, rho, cos_alpha, lambda_high, lambda_low, erank,
            rel_update`` (``None`` where not defined for a skipped tensor).
    """

    monosoup: StateDict
    highonly: StateDict
    lowonly: StateDict
    layers: list[dict[str, Any]] = field(default_factory=list)

    def variant(self, method: str) -> StateDict:
        """Return ``monosoup``, ``highonly`` or ``lowonly`` by name."""
        if method not in ("monosoup", "highonly", "lowonly"):
            raise MergeError(
                f"MonoSoupResult: unknown variant {method!r}; one of monosoup, highonly, lowonly."
            )
        return getattr(self, method)


def effective_rank(singular_values: torch.Tensor) -> float:
    """Return Roy & Vetterli's effective rank ``exp(−Σ p_i log p_i)``, ``p_i = σ_i / Σσ``."""
    s = singular_values.to(torch.float64)
    total = float(s.sum())
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def select_rank(
    singular_values: torch.Tensor,
    rank_rule: RankRule = "vetterli",
    R: float = 0.8,
) -> int:
    """Return the number k of top directions kept (1 ≤ k ≤ r) under ``rank_rule``.

    Args:
        singular_values: σ, descending, shape ``(r,)``.
        rank_rule: ``variance`` (cumulative σ² energy ≥ ``R``) or ``vetterli`` /
            ``freevariance`` (⌈effective rank⌉).
        R: energy threshold in (0, 1] for ``variance``.
    """
    s = singular_values.to(torch.float64)
    r = s.numel()
    if rank_rule == "variance":
        energy = s.square()
        cumulative = torch.cumsum(energy, 0) / energy.sum()
        # smallest k with cumulative[k-1] >= R (tolerate rounding at the exact threshold)
        k = int(torch.searchsorted(cumulative, torch.tensor([R - 1e-12], dtype=torch.float64)))
        k += 1
    elif rank_rule in ("vetterli", "freevariance"):
        k = math.ceil(effective_rank(s) - 1e-9)
    else:
        raise MergeError(
            f"monosoup: unknown rank_rule {rank_rule!r}. Valid: {', '.join(RANK_RULES)}."
        )
    return max(1, min(r, k))


def mixing_coefficients(singular_values: torch.Tensor, k: int) -> dict[str, float]:
    """Return ``P_k``, ``rho``, ``lambda_low`` and ``lambda_high`` for keeping ``k`` directions."""
    s = singular_values.to(torch.float64)
    energy = s.square()
    P_k = float(energy[:k].sum() / energy.sum())
    P_k = min(max(P_k, 0.0), 1.0)
    rho = float((s[k] / s[0]) ** 2) if k < s.numel() else 0.0
    lambda_low = rho + (1.0 - rho) * math.sqrt(1.0 - P_k)
    return {"P_k": P_k, "rho": rho, "lambda_low": lambda_low, "lambda_high": 1.0 - lambda_low}


def _skip(name: str, tensor: torch.Tensor, reason: str, rel: float | None = None) -> dict:
    return {
        "name": name,
        "edited": False,
        "skip_reason": reason,
        "shape": list(tensor.shape),
        "rows": None,
        "cols": None,
        "r": None,
        "k": None,
        "P_k": None,
        "rho": None,
        "cos_alpha": None,
        "lambda_high": None,
        "lambda_low": None,
        "erank": None,
        "rel_update": rel,
    }


#: Matrices whose Gram is at most this size are split single-threaded on the CPU: threading
#: cannot pay off there, and on a busy machine MKL's threads waiting for each other made a
#: 64x64 ``eigh`` ~200x slower (0.3 s instead of 1.4 ms).
_SINGLE_THREAD_MAX = 256


@contextlib.contextmanager
def _lapack_threads(matrix: torch.Tensor) -> Iterator[None]:
    """Run the block single-threaded when ``matrix``'s Gram is small and on the CPU."""
    n_threads = torch.get_num_threads()
    small = matrix.device.type == "cpu" and min(matrix.shape) <= _SINGLE_THREAD_MAX
    if small and n_threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != n_threads:
            torch.set_num_threads(n_threads)


def spectral_split(
    delta: torch.Tensor, rank_rule: RankRule = "vetterli", R: float = 0.8
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Return ``(σ, ΔW_high, k)`` for a float64 matrix ``delta`` (rows, cols).

    ``σ`` (descending, length ``r = min(rows, cols)``) and the rank-``k`` truncation
    ``ΔW_high`` come from ``eigh`` of the smaller Gram matrix (module docstring); ``k`` follows
    ``rank_rule``.
    """
    with _lapack_threads(delta):
        return _spectral_split(delta, rank_rule, R)


def _spectral_split(
    delta: torch.Tensor, rank_rule: RankRule, R: float
) -> tuple[torch.Tensor, torch.Tensor, int]:
    rows, cols = delta.shape
    left = rows <= cols
    gram = delta @ delta.T if left else delta.T @ delta
    eigenvalues, vectors = torch.linalg.eigh(gram)  # ascending
    # Eigenvalues below the Gram's rounding level (numpy's matrix_rank tolerance) are zeros
    # the product did not resolve: set them to 0 so an exactly low-rank ΔW keeps its rank.
    noise = float(eigenvalues[-1]) * max(rows, cols) * torch.finfo(torch.float64).eps
    sigma = torch.where(eigenvalues.flip(0) > noise, eigenvalues.flip(0), 0.0).sqrt()
    k = select_rank(sigma, rank_rule, R)
    top = vectors[:, -k:]  # the k largest, any order: only the projector is used
    high = top @ (top.T @ delta) if left else (delta @ top) @ top.T
    return sigma, high, k


def monosoup(
    w0: Mapping[str, torch.Tensor],
    w1: Mapping[str, torch.Tensor],
    rank_rule: RankRule = "vetterli",
    R: float = 0.8,
    min_rel_update: float = 1e-6,
    *,
    untouched_from: Literal["finetuned", "base"] = "finetuned",
    buffer_names: Collection[str] = (),
    include_buffers: bool = False,
    device: torch.device | str | None = None,
) -> MonoSoupResult:
    """Return MonoSoup, high-only and low-only edits of ``w1`` towards ``w0`` (module docstring).

    Args:
        w0: pre-trained (base) weights.
        w1: fine-tuned weights, same architecture.
        rank_rule: ``vetterli`` / ``freevariance`` or ``variance``.
        R: energy threshold for ``variance``.
        min_rel_update: tensors with ``‖ΔW‖_F / ‖W0‖_F`` below this are not edited.
        untouched_from: where tensors that are not edited come from: ``finetuned`` (W1, the
            reference code) or ``base`` (W0).
        buffer_names: the state-dict entries that are buffers, not parameters (e.g.
            ``{n for n, _ in model.named_buffers()}``); names not in ``w1`` are ignored.
        include_buffers: also edit buffers (default: parameters only, as the reference code).
        device: where the linear algebra runs (default: where the tensors are); results are
            returned on the inputs' device.

    Raises:
        MergeError: incompatible models, bad options, NaN/inf in an update (naming the tensor).
    """
    if rank_rule not in RANK_RULES:
        raise MergeError(
            f"monosoup: unknown rank_rule {rank_rule!r}. Valid: {', '.join(RANK_RULES)}."
        )
    if rank_rule == "variance" and not 0.0 < float(R) <= 1.0:
        raise MergeError(f"monosoup: R must be in (0, 1] (got {R}).")
    if not (math.isfinite(float(min_rel_update)) and float(min_rel_update) >= 0.0):
        raise MergeError(f"monosoup: min_rel_update must be >= 0 (got {min_rel_update}).")
    if untouched_from not in ("finetuned", "base"):
        raise MergeError(
            f"monosoup: untouched_from must be 'finetuned' or 'base' (got {untouched_from!r})."
        )
    check_compatible(w1, w0, where="monosoup", reference_name="finetuned", other_name="base")
    untouched = w1 if untouched_from == "finetuned" else w0
    result = MonoSoupResult({}, {}, {})
    buffers = frozenset(buffer_names)
    for name, t1 in w1.items():
        if name in buffers and not include_buffers:
            layer = _skip(name, t1, "buffer (MonoSoup edits parameters only; include_buffers)")
        else:
            layer = _edit(name, w0[name], t1, rank_rule, R, float(min_rel_update), device, result)
        if not layer["edited"]:
            for out in (result.monosoup, result.highonly, result.lowonly):
                out[name] = untouched[name].detach().clone()
        result.layers.append(layer)
    return result


def _edit(
    name: str,
    t0: torch.Tensor,
    t1: torch.Tensor,
    rank_rule: RankRule,
    R: float,
    min_rel_update: float,
    device: torch.device | str | None,
    result: MonoSoupResult,
) -> dict[str, Any]:
    """Edit one tensor into ``result`` (or decide to skip it); return its statistics."""
    if not is_mergeable(t1):
        return _skip(name, t1, "not floating point")
    if t1.ndim < 2:
        return _skip(name, t1, "fewer than 2 dims")
    base = t0.detach().to(device=device or t0.device, dtype=torch.float64)
    delta = t1.detach().to(device=base.device, dtype=torch.float64) - base
    check_finite(delta, f"monosoup: tensor '{name}' (W1 − W0)")
    norm_delta = float(delta.norm())
    if norm_delta == 0.0:
        return _skip(name, t1, "no update (W1 == W0)", 0.0)
    norm0 = float(base.norm())
    rel = norm_delta / norm0 if norm0 > 0 else math.inf
    if rel < min_rel_update:
        return _skip(name, t1, f"relative update {rel:.3g} < min_rel_update", rel)
    matrix = delta.reshape(delta.shape[0], -1)  # conv [out, in, kh, kw] -> [out, in·kh·kw]
    sigma, high, k = spectral_split(matrix, rank_rule, R)
    coef = mixing_coefficients(sigma, k)
    low = matrix - high
    cos_alpha = float((matrix * high).sum()) / (norm_delta * float(high.norm()))
    base = base.reshape(matrix.shape)
    edits = {
        "monosoup": base + coef["lambda_high"] * high + coef["lambda_low"] * low,
        "highonly": base + high,
        "lowonly": base + low,
    }
    for method, value in edits.items():
        getattr(result, method)[name] = value.reshape(t1.shape).to(t1.device, t1.dtype)
    return {
        "name": name,
        "edited": True,
        "skip_reason": None,
        "shape": list(t1.shape),
        "rows": int(matrix.shape[0]),
        "cols": int(matrix.shape[1]),
        "r": int(sigma.numel()),
        "k": k,
        "P_k": coef["P_k"],
        "rho": coef["rho"],
        "cos_alpha": cos_alpha,
        "lambda_high": coef["lambda_high"],
        "lambda_low": coef["lambda_low"],
        "erank": effective_rank(sigma),
        "rel_update": rel,
    }
