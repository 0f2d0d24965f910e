"""Linear-classifier solvers on feature arrays: the Rep2Rep trainer and an exact L-BFGS solver.

Both take float32 tensors already on their device and return ``(W, b)`` with ``W`` of shape
``(d, C)`` and ``b`` of shape ``(C,)``; scores are ``X @ W + b``. Neither touches the global RNG.

* :func:`fit_rep2rep` — the Rep2Rep / CLIP_benchmark probe: ``nn.Linear`` trained with AdamW
  (decoupled weight decay) and a per-step cosine learning-rate schedule without warm-up,
  mini-batches of 1024 rows reshuffled every epoch, 20 epochs.
* :func:`fit_logreg` — multinomial logistic regression with an L2 penalty, solved to
  convergence by full-batch L-BFGS (strong-Wolfe line search). It minimises

  .. math::

      f(W, b) = \\frac{1}{n} \\sum_{i=1}^{n} \\mathrm{CE}(x_i W + b, y_i)
                + \\frac{\\lambda}{2} \\lVert W \\rVert_F^2

  (the intercept is not penalised). scikit-learn's ``LogisticRegression(C=C)`` with the
  ``lbfgs`` solver minimises ``C · Σ CE + ½‖W‖²`` with the same over-parametrised softmax and
  an unpenalised intercept; dividing by ``n·C`` shows the two problems have the same minimiser
  when ``λ = 1 / (n·C)``, i.e. ``C = 1 / (n·λ)`` (:func:`sklearn_C`). The problem is strictly
  convex in ``W``, so warm starts (``init``) change only the number of iterations, never the
  answer (up to the tolerance).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["feature_spectrum", "fit_logreg", "fit_rep2rep", "l2_from_sklearn_C", "sklearn_C"]


def sklearn_C(l2: float, n_samples: int) -> float:
    """Return scikit-learn's ``C`` that defines the same problem as ``l2`` on ``n_samples`` rows."""
    return 1.0 / (n_samples * l2)


def l2_from_sklearn_C(C: float, n_samples: int) -> float:
    """Return :func:`fit_logreg`'s ``l2`` equivalent to scikit-learn's ``C`` on ``n_samples`` rows."""
    return 1.0 / (n_samples * C)


def feature_spectrum(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(s, U)``: eigenvalues and eigenvectors of the second moment ``XᵀX / n``.

    Computed once per set of training rows (float64 accumulation) and shared by every
    :func:`fit_logreg` call on those rows along the regularisation path.

    Args:
        X: features, (n, d) float tensor.

    Returns:
        ``s`` (d,) float64 eigenvalues (clamped at 0) and ``U`` (d, d) float64 eigenvectors,
        on ``X``'s device.
    """
    X64 = X.to(torch.float64)
    s, U = torch.linalg.eigh(X64.T @ X64 / X.shape[0])
    return s.clamp_min(0.0), U


def fit_logreg(
    X: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    *,
    l2: float,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    spectrum: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Return ``(W, b, n_evals)`` minimising the L2-penalised multinomial cross-entropy.

    Full-batch L-BFGS (``torch.optim.LBFGS``, history 20, strong-Wolfe line search) on the
    objective in the module docstring, run on whatever device and dtype ``X`` has, in
    preconditioned coordinates: with ``XᵀX/n = U diag(s) Uᵀ`` the solver works on
    ``V = D⁻¹ Uᵀ W``, ``D = diag((s/C + λ)^-½)``, where the Hessian (data curvature ≈ ``s/C`` at
    the uniform softmax, plus λ) is close to the identity. This is an exact change of variables
    (the minimiser is the same ``W``), it only removes the ill-conditioning that makes plain
    L-BFGS crawl at weak penalties (1000+ iterations → tens on digits features).

    Args:
        X: features, (n, d) float tensor.
        y: class indices in ``[0, n_classes)``, (n,) int64 tensor on the same device.
        n_classes: number of classes C.
        l2: penalty λ on ``W`` (``> 0``); scikit-learn's ``C = 1 / (n·λ)``.
        init: warm start ``(W, b)`` — e.g. the solution at a neighbouring λ on the path.
        spectrum: :func:`feature_spectrum` of ``X`` (computed here when ``None``).
        max_iter: cap on L-BFGS iterations.
        tol: stop when the largest absolute gradient entry (preconditioned coordinates, where
            it bounds the error of the class scores) falls below this. In float32 the solver
            also stops earlier, when the loss stops changing at float32 resolution.

    Returns:
        ``W`` (d, C), ``b`` (C,) in ``X``'s dtype and the number of objective evaluations.
    """
    if not l2 > 0:
        raise ValueError(f"fit_logreg: l2 must be > 0 (got {l2!r}).")
    s, U = feature_spectrum(X) if spectrum is None else spectrum
    scale = torch.rsqrt(s / n_classes + l2)
    M = (U * scale).to(X.dtype)  # W = M V
    penalty = (scale * scale).to(X.dtype)[:, None]  # ‖M V‖² = Σ_j scale_j² ‖V_j‖²
    Xp = X @ M
    if init is None:
        V = torch.zeros(X.shape[1], n_classes, dtype=X.dtype, device=X.device)
        b = torch.zeros(n_classes, dtype=X.dtype, device=X.device)
    else:
        W0, b0 = (t.detach().to(X.device, torch.float64) for t in init)
        V = ((U.T @ W0) / scale[:, None]).to(X.dtype)
        b = b0.to(X.dtype).clone()
    V.requires_grad_(True)
    b.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [V, b],
        lr=1.0,
        max_iter=max_iter,
        max_eval=int(max_iter * 1.25),
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    n_evals = 0

    def closure() -> torch.Tensor:
        nonlocal n_evals
        n_evals += 1
        optimizer.zero_grad(set_to_none=False)
        loss = F.cross_entropy(torch.addmm(b, Xp, V), y) + 0.5 * l2 * (penalty * V * V).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return M @ V.detach(), b.detach(), n_evals


def _cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * step / total_steps)) * base_lr


def fit_rep2rep(
    X: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    *,
    lr: float,
    weight_decay: float,
    epochs: int = 20,
    batch_size: int = 1024,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(W, b)`` of an ``nn.Linear`` probe trained the Rep2Rep / CLIP_benchmark way.

    AdamW (decoupled weight decay ``weight_decay`` on weight and bias, as ``model.parameters()``
    in CLIP_benchmark), cross-entropy, learning rate ``lr · ½(1 + cos(π·step/steps))`` set
    before every step, rows reshuffled every epoch, the last partial batch kept. The layer's
    initialisation and the shuffles come from a ``torch.Generator`` seeded with ``seed``.

    Args:
        X: features, (n, d) float tensor (already L2-normalised by the caller).
        y: class indices, (n,) int64 tensor on the same device.
        n_classes: number of classes C.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        epochs: passes over the data.
        batch_size: rows per step.
        seed: seed of initialisation and shuffling.

    Returns:
        ``W`` (d, C) and ``b`` (C,).
    """
    n, d = X.shape
    generator = torch.Generator(device="cpu").manual_seed(seed)
    bound = 1.0 / math.sqrt(d)  # nn.Linear's default init, drawn from our generator
    W = (torch.rand(n_classes, d, generator=generator) * 2 - 1) * bound
    b = (torch.rand(n_classes, generator=generator) * 2 - 1) * bound
    layer = torch.nn.Linear(d, n_classes, device=X.device, dtype=X.dtype)
    with torch.no_grad():
        layer.weight.copy_(W)
        layer.bias.copy_(b)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(X.device)
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            for group in optimizer.param_groups:
                group["lr"] = _cosine_lr(lr, step, total_steps)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(layer(X[rows]), y[rows]).backward()
            optimizer.step()
            step += 1
    return layer.weight.detach().T.contiguous(), layer.bias.detach().clone()
