"""Linear-classifier solvers on feature arrays: the Rep2Rep trainer and an exact L-BFGS solver.

Both take tensors already on their device and return ``W`` of shape ``(d, C)`` and ``b`` of
shape ``(C,)`` (:func:`fit_logreg` inside a :class:`LogRegFit`); scores are ``X @ W + b``.
Neither touches the global RNG.

* :func:`fit_rep2rep` — the Rep2Rep / CLIP_benchmark probe: ``nn.Linear`` trained with AdamW
  (decoupled weight decay) and a per-step cosine learning-rate schedule without warm-up,
  mini-batches of 1024 rows reshuffled every epoch, 20 epochs.
* :func:`fit_logreg` — multinomial logistic regression with an L2 penalty, solved to
  convergence by full-batch L-BFGS (Wolfe / approximate-Wolfe line search, in the rows'
  centred and whitened eigenbasis). It minimises

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

import torch
import torch.nn.functional as F

__all__ = [
    "LogRegFit",
    "Spectrum",
    "feature_spectrum",
    "fit_logreg",
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
    """A :func:`fit_logreg` solution, with what a warm start on the same rows reuses.

    ``scores`` and ``data_gradient`` do not depend on λ, so a fit at a neighbouring λ that starts
    from this one (``init=``) on the same ``rotated`` rows begins without a matrix product.
    """

    W: torch.Tensor  #: (d, C) weights
    b: torch.Tensor  #: (C,) intercepts
    n_evals: int  #: objective evaluations (line-search trials, each a softmax over the rows)
    rows: torch.Tensor | None = None  #: the ``rotated`` rows the state below belongs to
    scores: torch.Tensor | None = None  #: (C, n) class scores of those rows
    data_gradient: torch.Tensor | None = None  #: (C, d+1) ``(softmax − onehot) @ rows``

    def without_state(self) -> LogRegFit:
        """Return the solution alone: still a warm start, no longer holding (C, n) scores."""
        return LogRegFit(self.W, self.b, self.n_evals)


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


#: Iterations in a row whose loss change is within rounding after which a fit stops (a gradient
#: tolerance the dtype cannot resolve); the slope-based line search keeps moving meanwhile.
_MAX_FLAT_STEPS = 10


def _lbfgs_direction(
    g: torch.Tensor, S: torch.Tensor, Y: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Return ``H g`` for the L-BFGS inverse-Hessian approximation ``H`` (compact form).

    ``S`` and ``Y`` hold the last steps and gradient changes as rows, oldest first; ``H₀ = γI``.
    Byrd, Nocedal & Schnabel (1994), eq. (3.1): with ``R`` the upper triangle of ``SYᵀ`` and
    ``D`` its diagonal, ``Hg = γg + Sᵀw − γYᵀu``, ``u = R⁻¹(Sg)``,
    ``w = R⁻ᵀ((D + γYYᵀ)u − γ·Yg)`` — a handful of matrix products instead of the two-loop
    recursion's ``4m`` vector operations (which dominate the cost on small problems).
    """
    flat = g.reshape(-1)
    if S.shape[0] == 0:
        return gamma * g
    Sg, Yg = S @ flat, Y @ flat
    SY, YY = S @ Y.T, Y @ Y.T
    R = torch.triu(SY)
    u = torch.linalg.solve_triangular(R, Sg[:, None], upper=True)
    rhs = (torch.diag(torch.diagonal(SY)) + gamma * YY) @ u - gamma * Yg[:, None]
    w = torch.linalg.solve_triangular(R.T, rhs, upper=False)
    return (gamma * flat + S.T @ w[:, 0] - gamma * (Y.T @ u[:, 0])).reshape(g.shape)


def _log_softmax_parts(Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(logsumexp, softmax)`` over the classes (dim 0) of class-major scores (C, n).

    One exponential per score (``torch.logsumexp`` + ``exp`` take two).
    """
    m = Z.amax(dim=0, keepdim=True)
    E = torch.exp(Z - m)
    s = E.sum(dim=0, keepdim=True)
    return (m + torch.log(s))[0], E.div_(s)


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

    Full-batch L-BFGS (history 20, a weak-Wolfe line search) on the objective in the module
    docstring, run on whatever device and dtype ``X`` has, in preconditioned coordinates: with
    the rows' mean ``μ`` and covariance ``U diag(s) Uᵀ`` (:func:`feature_spectrum`) the solver
    works on ``V = D⁻¹ Uᵀ W``, ``D = diag((s/C + λ)^-½)``, and on the centred intercept
    ``b' = b + μW`` divided by ``√C``, so that the scores are ``(X − μ) W + b'`` and the Hessian
    (data curvature ≈ ``s/C`` at the uniform softmax plus λ; ``1/C`` for ``b'``) is close to the
    identity. This is an exact change of variables for *any* orthogonal ``U``, positive ``s``
    and ``μ`` (the minimiser is the same ``(W, b)``); the spectrum of the fitted rows (or of
    rows from the same distribution) only makes it a good preconditioner — it removes the
    ill-conditioning that makes plain L-BFGS crawl at weak penalties (1000+ iterations → tens
    on digits features). Centring matters: uncentred, the rows' mean direction and the
    intercept are strongly coupled (a narrow valley no diagonal scaling removes) — on the
    benchmark's features centring and the intercept's scaling cut the iterations of a whole
    sweep by 30–60 %.

    The model is linear, so the solver never recomputes ``X @ W`` inside a line search: per
    iteration it forms the scores of the search direction ``Q = X_rot (D p)`` once, and every
    trial step ``t`` costs only a softmax of ``Z + tQ`` (value and directional derivative, no
    matrix product); the gradient at the accepted point is one more ``X_rotᵀ R`` product. So an
    iteration is two ``n·d·C`` products whatever the number of line-search trials (the scores
    are recomputed from scratch every ``history`` iterations against drift). A trial step is
    accepted on the Wolfe conditions or, near the optimum where differences of objective values
    drown in rounding (float32: ~1e-7 relative), on Hager & Zhang's (2005) *approximate* Wolfe
    conditions, which test the exact directional derivative instead of the value.

    Args:
        X: features, (n, d) float tensor.
        y: class indices in ``[0, n_classes)``, (n,) int64 tensor on the same device.
        n_classes: number of classes C.
        l2: penalty λ on ``W`` (``> 0``); scikit-learn's ``C = 1 / (n·λ)``.
        init: warm start ``(W, b)`` or a :class:`LogRegFit` — e.g. the solution at a
            neighbouring λ on the path; a fit on the same ``rotated`` rows also lends its scores.
        spectrum: :func:`feature_spectrum` of ``X`` or of rows like it (computed from ``X`` when
            ``None``); a regularisation path shares one.
        rotated: :func:`rotate_features` of ``X`` for this spectrum, shared by the fits of a
            path (one ``n·d²`` product for all). When ``None`` the rows stay in their own basis
            and each iteration rotates the (C, d) coefficients instead (``2·C·d²`` more work per
            iteration, cheaper than rotating the rows for a single fit of tens of iterations).
        max_iter: cap on L-BFGS iterations.
        tol: stop when the largest absolute gradient entry (preconditioned coordinates, where
            it bounds the error of the class scores) falls below this. The solver also stops
            when the loss stops changing (below 1e-12, or within rounding for
            ``_MAX_FLAT_STEPS`` iterations in a row: a tolerance below what the dtype resolves)
            or no step along the L-BFGS direction decreases it.
        history: L-BFGS memory.

    Returns:
        ``W`` (d, C), ``b`` (C,) in ``X``'s dtype, the number of objective evaluations and the
        state a warm start on the same rows reuses.
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
    if rotated is None:  # rows in their own basis: rotate the coefficients instead
        A = torch.cat([X - mean.to(dt), X.new_ones(n, 1)], dim=1)
        basis = torch.block_diag(U, U.new_ones(1, 1)).to(dt)  # θ's basis → the rows' basis
    else:
        A, basis = rotated, None
    # Class-major layout (measured faster for CPU BLAS and for reductions over classes):
    # θ = [V, b'/√C] as one (C, d+1) tensor, scores Z = θ' [(X − μ) U, 1]ᵀ as (C, n) with
    # θ' = θ ⊙ scale; W = U (scale ⊙ V)ᵀ; penalty λ/2 Σ_j scale_j² ‖V_:j‖².
    sc = torch.cat([scale64, scale64.new_full((1,), bias_scale)]).to(dt)[None, :]
    l2pen = l2 * torch.cat([scale64 * scale64, scale64.new_zeros(1)]).to(dt)[None, :]
    pen = l2pen / l2
    theta = torch.zeros(n_classes, d + 1, dtype=dt, device=dev)
    if init is not None:
        W0, b0 = (t.detach().to(dev, torch.float64) for t in init[:2])
        theta[:, :d] = ((W0.T @ U) / scale64).to(dt)
        theta[:, d] = ((b0 + mean @ W0) / bias_scale).to(dt)
    y = y.to(dev)
    onehot = torch.zeros(n_classes, n, dtype=dt, device=dev)
    onehot[y, torch.arange(n, device=dev)] = 1.0
    flat_y = y * n + torch.arange(n, device=dev)  # Z[y_i, i] = Z.take(flat_y)[i]
    sc_n = sc / n

    def scores(th: torch.Tensor) -> torch.Tensor:
        coef = sc * th if basis is None else (sc * th) @ basis.T
        return coef @ A.T

    def data_gradient(P: torch.Tensor) -> torch.Tensor:
        # (softmax − onehot) @ rows, in θ's basis and unscaled: the same for every λ.
        RA = (P - onehot) @ A
        return RA if basis is None else RA @ basis

    def gradient(RA: torch.Tensor, th: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(l2pen * th, sc_n, RA)

    def from_scratch(
        th: torch.Tensor, Z: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, float, float, float]:
        # Scores, softmax, objective and its running terms (mean true-class score, penalty sum).
        Z = scores(th) if Z is None else Z
        lse, P = _log_softmax_parts(Z)
        zy_t, pa_t = Z.take(flat_y).mean(), (pen * th * th).sum()
        f, zy, pa = torch.stack([lse.mean() - zy_t + 0.5 * l2 * pa_t, zy_t, pa_t]).tolist()
        return Z, P, f, zy, pa

    def along(p: torch.Tensor) -> tuple[torch.Tensor, float, float, float, float]:
        # Scores of direction p and the scalars of φ(t): slope at 0, true-class and penalty terms.
        Q = scores(p)  # its bias row included
        d0, qy, pb, pc = torch.stack(
            [(G * p).sum(), Q.take(flat_y).mean(), (pen * theta * p).sum(), (pen * p * p).sum()]
        ).tolist()
        return Q, d0, qy, pb, pc

    carried = (
        init
        if isinstance(init, LogRegFit)
        and init.rows is A
        and init.scores is not None
        and init.scores.dtype == dt
        and init.data_gradient is not None
        else None
    )
    Z, P, f, zy, pa = from_scratch(theta, carried.scores if carried is not None else None)
    RA = (
        carried.data_gradient
        if carried is not None and carried.data_gradient is not None
        else data_gradient(P)
    )
    G = gradient(RA, theta)
    gmax = float(G.abs().max())
    n_evals = 1
    S_hist = G.new_zeros(0, G.numel())  # past steps, oldest first (rows)
    Y_hist = G.new_zeros(0, G.numel())  # past gradient changes
    gamma = 1.0
    c1, c2 = 1e-4, 0.9
    eps = torch.finfo(dt).eps
    flat_steps = 0  # consecutive iterations whose change of loss is within rounding
    for it in range(max_iter):
        if gmax <= tol:
            break
        p = -_lbfgs_direction(G, S_hist, Y_hist, gamma)
        Q, d0, qy, pb, pc = along(p)
        if not d0 < 0:  # not a descent direction (rounding): restart from steepest descent
            S_hist, Y_hist, gamma = S_hist[:0], Y_hist[:0], 1.0
            p = -G
            Q, d0, qy, pb, pc = along(p)
        # Weak-Wolfe line search on φ(t) = f(θ + t p): the scores are Z + tQ, so a trial is a
        # softmax, and φ'(t) = mean_i Σ_c softmax(Z + tQ)_ic Q_ic − mean_i Q_iy + λ·(pb + t·pc).
        # Hager–Zhang: the sufficient-decrease test on values is replaced by one on slopes,
        # φ'(t) ≤ (2c₁ − 1)φ'(0) (equivalent for a quadratic), when φ(t) is within rounding of f.
        t, lo, hi = 1.0, 0.0, math.inf
        accepted = None
        noise = 16 * eps * (abs(f + zy - 0.5 * l2 * pa) + abs(zy) + 0.5 * l2 * pa)
        for _ in range(30):
            Zt = torch.add(Z, Q, alpha=t)
            lse, Pt = _log_softmax_parts(Zt)
            mean_lse, slope = torch.stack([lse.mean(), (Pt * Q).sum() / n]).tolist()
            n_evals += 1
            phi = mean_lse - zy - t * qy + 0.5 * l2 * (pa + 2 * t * pb + t * t * pc)
            dphi = slope - qy + l2 * (pb + t * pc)
            decrease = phi <= f + c1 * t * d0 or (phi <= f + noise and dphi <= (2 * c1 - 1) * d0)
            if not math.isfinite(phi) or not decrease:
                hi = t
            elif dphi < c2 * d0:
                lo = t
                accepted = (t, phi, Zt, Pt)  # sufficient decrease: a fallback
            else:
                accepted = (t, phi, Zt, Pt)
                break
            t = 0.5 * (lo + hi) if hi < math.inf else 2.0 * t
        if accepted is None:
            break  # no decrease along p at float resolution: converged as far as it can go
        t, phi, Z, P = accepted
        step = p.mul_(t)
        theta += step
        zy, pa = zy + t * qy, pa + 2 * t * pb + t * t * pc
        if (it + 1) % history == 0:  # refresh the scores against accumulated rounding
            Z, P, phi, zy, pa = from_scratch(theta)
        RA = data_gradient(P)
        G_new = gradient(RA, theta)
        y_vec = G_new - G
        sy, yy, gmax = torch.stack(
            [(step * y_vec).sum(), (y_vec * y_vec).sum(), G_new.abs().max()]
        ).tolist()
        if sy > 1e-10 * yy and sy > 0:
            keep = history - 1
            S_hist = torch.cat([S_hist[-keep:] if keep else S_hist[:0], step.reshape(1, -1)])
            Y_hist = torch.cat([Y_hist[-keep:] if keep else Y_hist[:0], y_vec.reshape(1, -1)])
            gamma = sy / yy
        G = G_new
        change, f = abs(f - phi), phi
        flat_steps = flat_steps + 1 if change <= noise else 0
        if change < 1e-12 or flat_steps >= _MAX_FLAT_STEPS:
            break
    # Wᵀ = (V ⊙ scale) Uᵀ as a product of contiguous (C, d) rows (a thin product with a
    # transposed right operand is ~20× slower in MKL at d = 1024).
    W = ((theta[:, :d].to(torch.float64) * scale64) @ U.T).T.contiguous()
    b = theta[:, d].to(torch.float64) * bias_scale - mean @ W
    if rotated is None:
        return LogRegFit(W.to(dt), b.to(dt), n_evals)
    return LogRegFit(W.to(dt), b.to(dt), n_evals, rows=A, scores=Z, data_gradient=RA)


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
