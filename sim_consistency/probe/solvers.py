"""Linear-classifier solvers on feature arrays: the Rep2Rep trainer and an exact L-BFGS solver.

Both take tensors already on their device and return ``W`` of shape ``(d, C)`` and ``b`` of
shape ``(C,)`` (:func:`fit_logreg` inside a :class:`LogRegFit`); scores are ``X @ W + b``.
Neither touches the global RNG.

* :func:`fit_rep2rep` — the Rep2Rep / CLIP_benchmark probe: ``nn.Linear`` trained with AdamW
  (decoupled weight decay) and a per-step cosine learning-rate schedule without warm-up,
  mini-batches of 1024 rows reshuffled every epoch, 20 epochs.
* :func:`fit_logreg` — multinomial logistic regression with an L2 penalty, solved to
  convergence by full-batch ``torch.optim.LBFGS`` (strong-Wolfe line search) in the rows'
  centred and whitened eigenbasis. It minimises

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
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "LogRegFit",
    "Spectrum",
    "feature_spectrum",
    "fit_logreg",
    "REGULARIZATIONS",
    "RNG_STREAMS",
    "fit_rep2rep",
    "l2_from_sklearn_C",
    "rotate_features",
    "sklearn_C",
]


def sklearn_C(l2: float, n_samples: int) -> float:
    """Return scikit-learn's ``C`` that defines the same problem as ``l2`` on ``n_samples`` rows."""
    return 1.0 / (n_samples * l2)


def l2_from_sklearn_C(C: float, n_samples: int) -> float:
    """Return :func:`fit_logreg`'s ``l2`` equivalent to scikit-learn's ``C`` on ``n_samples`` rows."""
    return 1.0 / (n_samples * C)


class Spectrum(NamedTuple):
    """The basis :func:`fit_logreg` solves in: mean and covariance eigen-decomposition of rows."""

    values: torch.Tensor  #: (d,) float64 eigenvalues of the covariance, clamped at 0
    vectors: torch.Tensor  #: (d, d) float64 eigenvectors (columns)
    mean: torch.Tensor  #: (d,) float64 mean row


class LogRegFit(NamedTuple):
    """A :func:`fit_logreg` solution; a fit at a neighbouring λ starts from it (``init=``)."""

    W: torch.Tensor  #: (d, C) weights
    b: torch.Tensor  #: (C,) intercepts
    n_evals: int  #: objective evaluations (value and gradient, two n·d·C products each)


def feature_spectrum(X: torch.Tensor) -> Spectrum:
    """Return the :class:`Spectrum` of the rows: their mean ``μ`` and ``(X−μ)ᵀ(X−μ)/n = U diag(s) Uᵀ``.

    Computed once per set of training rows (float64 accumulation) and shared by every
    :func:`fit_logreg` call on those rows along the regularisation path.

    Args:
        X: features, (n, d) float tensor.

    Returns:
        The eigenvalues ``s`` (clamped at 0), eigenvectors ``U`` and mean ``μ``, float64 on
        ``X``'s device.
    """
    mean = X.to(torch.float64).mean(dim=0)
    Xc = X - mean.to(X.dtype)
    # The covariance only shapes the preconditioner (any orthogonal U gives the same minimiser),
    # so it is formed in X's dtype; the eigendecomposition runs in float64 so that U is
    # orthogonal to float64 precision (the penalty ‖W‖² = ‖D V‖² relies on it).
    s, U = torch.linalg.eigh((Xc.T @ Xc).to(torch.float64) / X.shape[0])
    return Spectrum(s.clamp_min(0.0), U, mean)


def rotate_features(X: torch.Tensor, spectrum: Spectrum) -> torch.Tensor:
    """Return ``[(X − μ) U, 1]`` (n, d+1) in ``X``'s dtype: the rows in :func:`fit_logreg`'s basis.

    One ``n·d²`` product per set of rows, shared by every fit on them (``rotated=``).
    """
    U = spectrum.vectors.to(X.device, X.dtype)
    mean = spectrum.mean.to(X.device, X.dtype)
    return torch.cat([(X - mean) @ U, X.new_ones(X.shape[0], 1)], dim=1)


def fit_logreg(
    X: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    *,
    l2: float,
    init: LogRegFit | tuple[torch.Tensor, torch.Tensor] | None = None,
    spectrum: Spectrum | None = None,
    rotated: torch.Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    history: int = 20,
) -> LogRegFit:
    """Return the :class:`LogRegFit` minimising the L2-penalised multinomial cross-entropy.

    Full-batch ``torch.optim.LBFGS`` (strong-Wolfe line search, history 20) on the objective in
    the module docstring, run on whatever device and dtype ``X`` has, in preconditioned
    coordinates: with the rows' mean ``μ`` and covariance ``U diag(s) Uᵀ``
    (:func:`feature_spectrum`) the solver works on ``V = D⁻¹ Uᵀ W``, ``D = diag((s/C + λ)^-½)``,
    and on the centred intercept ``b' = b + μW`` divided by ``√C``, so that the scores are
    ``(X − μ) W + b'`` and the Hessian (data curvature ≈ ``s/C`` at the uniform softmax plus λ;
    ``1/C`` for ``b'``) is close to the identity. This is an exact change of variables for
    *any* orthogonal ``U``, positive ``s`` and ``μ`` (the minimiser is the same ``(W, b)``); the
    spectrum of the fitted rows (or of rows from the same distribution) only makes it a good
    preconditioner — it removes the ill-conditioning that makes plain L-BFGS crawl at weak
    penalties (1000+ iterations → tens on digits features). Centring matters: uncentred, the
    rows' mean direction and the intercept are strongly coupled (a narrow valley no diagonal
    scaling removes).

    Each evaluation returns the value and the analytic gradient (two ``n·d·C`` products, no
    autograd). ``benchmarks/probe.py --solver_trial`` (commit dc8afc4) compared it with a
    hand-written L-BFGS whose line-search trials cost a softmax each: the hand-written one was
    1.4× faster on the 10,000 × 768 × 100 path, not the 2× that would justify its code
    (benchmarks/RESULTS.md).

    Args:
        X: features, (n, d) float tensor.
        y: class indices in ``[0, n_classes)``, (n,) int64 tensor on the same device.
        n_classes: number of classes C.
        l2: penalty λ on ``W`` (``> 0``); scikit-learn's ``C = 1 / (n·λ)``.
        init: warm start ``(W, b)`` or a :class:`LogRegFit` — e.g. the solution at a
            neighbouring λ on the path.
        spectrum: :func:`feature_spectrum` of ``X`` or of rows like it (computed from ``X`` when
            ``None``); a regularisation path shares one.
        rotated: :func:`rotate_features` of ``X`` for this spectrum, shared by the fits of a
            path (one ``n·d²`` product for all); computed here when ``None``.
        max_iter: cap on L-BFGS iterations.
        tol: stop when the largest absolute gradient entry (preconditioned coordinates, where
            it bounds the error of the class scores) falls below this (``tolerance_grad``).
            The solver also stops when neither the loss nor θ changes at the dtype's
            resolution (a tolerance the dtype cannot resolve) or the line search finds no
            decrease.
        history: L-BFGS memory.

    Returns:
        ``W`` (d, C), ``b`` (C,) in ``X``'s dtype and the number of objective evaluations.
    """
    if not l2 > 0:
        raise ValueError(f"fit_logreg: l2 must be > 0 (got {l2!r}).")
    spectrum = feature_spectrum(X) if spectrum is None else spectrum
    s, U, mean = (t.to(X.device, torch.float64) for t in spectrum)
    scale64 = torch.rsqrt(s / n_classes + l2)
    # The centred bias b' = b + μW has curvature ≈ 1/C at the uniform softmax: scale it by √C.
    bias_scale = math.sqrt(n_classes)
    n, d = X.shape
    dt, dev = X.dtype, X.device
    A = rotate_features(X, spectrum) if rotated is None else rotated
    # Class-major layout (measured faster for CPU BLAS and for reductions over classes):
    # θ = [V, b'/√C] as one (C, d+1) tensor, scores Z = (θ ⊙ scale) [(X − μ) U, 1]ᵀ as (C, n);
    # W = U (scale ⊙ V)ᵀ; penalty λ/2 Σ_j scale_j² ‖V_:j‖².
    sc = torch.cat([scale64, scale64.new_full((1,), bias_scale)]).to(dt)[None, :]
    l2pen = l2 * torch.cat([scale64 * scale64, scale64.new_zeros(1)]).to(dt)[None, :]
    theta = torch.zeros(n_classes, d + 1, dtype=dt, device=dev)
    if init is not None:
        W0, b0 = (t.detach().to(dev, torch.float64) for t in init[:2])
        theta[:, :d] = ((W0.T @ U) / scale64).to(dt)
        theta[:, d] = ((b0 + mean @ W0) / bias_scale).to(dt)
    theta.requires_grad_(True)
    y = y.to(dev)
    onehot = torch.zeros(n_classes, n, dtype=dt, device=dev)
    onehot[y, torch.arange(n, device=dev)] = 1.0
    sc_n = sc / n
    n_evals = 0

    @torch.no_grad()
    def closure() -> torch.Tensor:
        nonlocal n_evals
        n_evals += 1
        th = theta.detach()
        Z = (sc * th) @ A.T
        lse = torch.logsumexp(Z, dim=0)
        f = lse.mean() - (Z * onehot).sum() / n + 0.5 * (l2pen * th * th).sum()
        P = torch.exp(Z - lse)
        theta.grad = torch.addcmul(l2pen * th, sc_n, (P - onehot) @ A)
        return f

    optimizer = torch.optim.LBFGS(
        [theta],
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_iter * 5 // 4 + 1,
        tolerance_grad=tol,
        tolerance_change=torch.finfo(dt).eps ** 2,  # no change at the dtype's resolution
        history_size=history,
        line_search_fn="strong_wolfe",
    )
    optimizer.step(closure)
    th = theta.detach()
    # Wᵀ = (V ⊙ scale) Uᵀ as a product of contiguous (C, d) rows (a thin product with a
    # transposed right operand is ~20× slower in MKL at d = 1024).
    W = ((th[:, :d].to(torch.float64) * scale64) @ U.T).T.contiguous()
    b = th[:, d].to(torch.float64) * bias_scale - mean @ W
    return LogRegFit(W.to(dt), b.to(dt), n_evals)


def _cosine_lr(base_lr: float, step: int, total_steps: int, *, numpy_cos: bool = False) -> float:
    # Rep2Rep computes the cosine with numpy (``np.cos``), whose last bit may differ from libm's.
    cos = (
        float(np.cos(np.pi * step / total_steps))
        if numpy_cos
        else math.cos(math.pi * step / total_steps)
    )
    return 0.5 * (1.0 + cos) * base_lr


#: Rep2Rep's ``--regularization`` choices: AdamW's decoupled decay, or a penalty in the loss.
REGULARIZATIONS: tuple[str, ...] = ("weight_decay", "L1", "L2")

#: Random streams of :func:`fit_rep2rep`: our own generator, or Rep2Rep's global-RNG sequence.
RNG_STREAMS: tuple[str, ...] = ("simc", "rep2rep")


def _rep2rep_init(
    d: int, n_classes: int, generator: torch.Generator, stream: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the initial ``(weight (C, d), bias (C,))`` of an ``nn.Linear(d, C)``, on the CPU."""
    if stream == "rep2rep":  # nn.Linear.reset_parameters, drawn from our generator
        W = torch.empty(n_classes, d)
        torch.nn.init.kaiming_uniform_(W, a=math.sqrt(5), generator=generator)
        bound = 1 / math.sqrt(d)
        b = torch.empty(n_classes).uniform_(-bound, bound, generator=generator)
        return W, b
    bound = 1.0 / math.sqrt(d)
    W = (torch.rand(n_classes, d, generator=generator) * 2 - 1) * bound
    b = (torch.rand(n_classes, generator=generator) * 2 - 1) * bound
    return W, b


def _epoch_order(n: int, generator: torch.Generator, stream: str) -> torch.Tensor:
    """Return one epoch's row order.

    ``"rep2rep"``: what a ``DataLoader(shuffle=True)`` without its own generator draws from the
    global RNG per epoch — one int64 for the iterator's base seed, one for the
    ``RandomSampler``'s seed, then ``randperm`` from a fresh generator with that seed.
    """
    if stream == "rep2rep":
        torch.empty((), dtype=torch.int64).random_(generator=generator)  # the base seed
        seed = int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return torch.randperm(n, generator=generator)


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
    regularization: str = "weight_decay",
    rng: str = "simc",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(W, b)`` of an ``nn.Linear`` probe trained the Rep2Rep / CLIP_benchmark way.

    AdamW, cross-entropy, learning rate ``lr · ½(1 + cos(π·step/steps))`` set before every
    step, rows reshuffled every epoch, the last partial batch kept. ``regularization`` (Rep2Rep's
    ``--regularization``) says what ``weight_decay`` (its ``reg_lambda``) is: ``"weight_decay"``
    — AdamW's decoupled decay on weight and bias (``model.parameters()``); ``"L1"`` / ``"L2"`` —
    AdamW without decay and ``λ·Σ|W|`` / ``λ·Σ W²`` over the weight (not the bias) added to
    each batch's mean loss.

    The initialisation and the shuffles come from a ``torch.Generator`` seeded with ``seed``;
    ``rng="rep2rep"`` draws them in Rep2Rep's order (``torch.manual_seed(seed)``, then
    ``nn.Linear``'s own init, then a ``DataLoader(shuffle=True)``'s draws per epoch), so
    the same rows in the same order train the same probe as Rep2Rep's ``LinearProbe.train``
    on the CPU; the global RNG is never touched.

    Args:
        X: features, (n, d) float tensor (already L2-normalised by the caller).
        y: class indices, (n,) int64 tensor on the same device.
        n_classes: number of classes C.
        lr: peak learning rate.
        weight_decay: the regularisation strength λ.
        epochs: passes over the data.
        batch_size: rows per step.
        seed: seed of initialisation and shuffling.
        regularization: one of :data:`REGULARIZATIONS`.
        rng: one of :data:`RNG_STREAMS`.

    Returns:
        ``W`` (d, C) and ``b`` (C,).
    """
    if regularization not in REGULARIZATIONS:
        raise ValueError(
            f"regularization must be one of {REGULARIZATIONS} (got {regularization!r})"
        )
    if rng not in RNG_STREAMS:
        raise ValueError(f"rng must be one of {RNG_STREAMS} (got {rng!r})")
    n, d = X.shape
    generator = torch.Generator(device="cpu").manual_seed(seed)
    W, b = _rep2rep_init(d, n_classes, generator, rng)
    layer = torch.nn.Linear(d, n_classes, device=X.device, dtype=X.dtype)
    with torch.no_grad():
        layer.weight.copy_(W)
        layer.bias.copy_(b)
    decoupled = weight_decay if regularization == "weight_decay" else 0.0
    optimizer = torch.optim.AdamW(layer.parameters(), lr=lr, weight_decay=decoupled)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        order = _epoch_order(n, generator, rng).to(X.device)
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            for group in optimizer.param_groups:
                group["lr"] = _cosine_lr(lr, step, total_steps, numpy_cos=rng == "rep2rep")
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(layer(X[rows]), y[rows])
            if regularization == "L1":
                loss = loss + weight_decay * layer.weight.abs().sum()
            elif regularization == "L2":
                loss = loss + weight_decay * layer.weight.pow(2).sum()
            loss.backward()
            optimizer.step()
            step += 1
    return layer.weight.detach().T.contiguous(), layer.bias.detach().clone()
