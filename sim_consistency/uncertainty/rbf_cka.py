"""Leave-group-out RBF CKA from per-group block sums of the prepared kernels (exact).

Each representation's kernel is the one :class:`~sim_consistency.similarity.cka.RbfStats`
prepares — ``K = I + c A`` with ``A`` the scaled off-diagonal RBF kernel. Kernel entries do not
depend on the other rows, so leaving a row group out only restricts the sums the HSIC
estimators need to the kept rows ``S`` (``m = |S|``), with the centring redone for ``S``:

* ``tr(K_S H_m L_S H_m) = (m-1) + c_x c_y [<A,B>_S - 2/m a^S.b^S + s_a s_b / m^2]
  - (c_x s_a + c_y s_b) / m`` (biased, Gretton et al., 2005; Kornblith et al., 2019);
* ``m(m-3) HSIC_u = <A,B>_S + s_a s_b / ((m-1)(m-2)) - 2/(m-2) a^S.b^S`` (Song et al., 2012,
  eq. 5, diagonal-free form),

where ``a^S_i = sum_{j in S} A_ij`` and ``s_a = sum_{i in S} a^S_i``. With group ``g`` left out,
``<A,B>_S = W_tot - 2 W_g. + W_gg`` from the K×K block sums ``W_gh = sum_{i in g, j in h}
A_ij B_ij`` of every model pair, and ``a^S_i = a_i - R_ig`` from each model's per-group row sums
``R_ig = sum_{j in g} A_ij``. Both are by-products of the plain streamed matrix
(:func:`~sim_consistency.similarity.streamed.rbf_cross_matrix`: rows sorted by group,
block-upper slabs, per slab one M×M GEMM per column group). For the default groups (K = 20,
seed 0) the plain matrix already runs in that order
(:func:`~sim_consistency.similarity.matrix.rbf_streamed_matrix`), so the interval costs no
second pass; other groups take one more pass (kernel rows formed once per model, never per
pair or per group).

Bandwidth. With ``sigma_median`` the bandwidth is resolved once on the full sample and held
fixed for the leave-group-out values (the jackknife then treats σ as a chosen hyperparameter;
the variability of the median itself is not included). With an absolute ``sigma`` the values
are exactly the estimator on the kept rows (tested ≤ 1e-10 against recomputing it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from sim_consistency.errors import ConfigError
from sim_consistency.similarity._arrays import group_bounds
from sim_consistency.similarity.cka import RbfStats
from sim_consistency.similarity.streamed import DEFAULT_MEMORY_BUDGET, RbfBlocks, rbf_cross_matrix

__all__ = ["rbf_cka_leave_out", "rbf_leave_out_from_blocks"]


def rbf_cka_leave_out(
    stats: Sequence[RbfStats],
    groups: npt.NDArray[np.int64],
    *,
    unbiased: bool = False,
    slab_rows: int = 256,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    device: str = "numpy",
) -> npt.NDArray[np.float64]:
    """Return RBF CKA of every model pair with each row group left out, (M, M, K).

    Args:
        stats: :class:`~sim_consistency.similarity.cka.RbfStats` of M representations of the
            same rows (``rbf_stats(X, sigma=..., self_terms=False)`` is enough: the scale is
            checked and made exact here when needed).
        groups: the row-group label of each row, (n,).
        unbiased: unbiased HSIC (Song et al., 2012) instead of the biased one.
        slab_rows: most kernel rows per slab.
        memory_budget, device: as :func:`~sim_consistency.similarity.streamed.rbf_cross_matrix`.

    Returns:
        ``theta_(g)`` for each pair (symmetric in the first two axes); NaN where undefined
        (constant representation, kernel underflow for the unbiased estimator).
    """
    groups = np.asarray(groups)
    n = stats[0].n if stats else 0
    if any(s.n != n for s in stats) or groups.shape != (n,):
        raise ConfigError(
            "jackknife: every representation and the group labels need the same rows "
            f"(got {[s.n for s in stats]} rows and {groups.shape[0]} labels)."
        )
    order = np.argsort(groups, kind="stable")
    perm = [
        replace(s, Xc=s.Xc[order], sq_norms=s.sq_norms[order], row_sums=s.row_sums[order])
        for s in stats
    ]
    _, blocks = rbf_cross_matrix(
        perm,
        memory_budget=memory_budget,
        slab_rows=slab_rows,
        device=device,
        complete=True,
        bounds=group_bounds(groups),
        blocks=True,
    )
    return rbf_leave_out_from_blocks(blocks, perm, unbiased=unbiased)


def rbf_leave_out_from_blocks(
    blocks: RbfBlocks, stats: Sequence[RbfStats], *, unbiased: bool = False
) -> npt.NDArray[np.float64]:
    """Return the (M, M, K) leave-group-out RBF CKA from one grouped streamed pass.

    ``blocks`` and ``stats`` (rows sorted by group, completed) come from
    :func:`~sim_consistency.similarity.streamed.rbf_cross_matrix` with ``complete=True`` and
    ``blocks=True``.
    """
    sizes = np.diff(blocks.bounds)
    sorted_groups = np.repeat(np.arange(sizes.size), sizes)
    return _leave_out_cka(blocks.W, blocks.R, stats, sorted_groups, sizes, unbiased)


def _leave_out_cka(
    W: np.ndarray,
    R: np.ndarray,
    stats: Sequence[RbfStats],
    groups: np.ndarray,
    sizes: np.ndarray,
    unbiased: bool,
) -> npt.NDArray[np.float64]:
    """Assemble ``theta_(g)`` from the block sums (see the module docstring)."""
    n = R.shape[1]
    m = (n - sizes).astype(np.float64)
    diag = np.diagonal(W, axis1=2, axis2=3)  # (M, M, K): W_gg
    cross = W.sum(axis=(2, 3))[..., None] - 2.0 * W.sum(axis=3) + diag
    kept = R.sum(axis=2, keepdims=True) - R  # a_i - R_ig
    kept[:, np.arange(n), groups] = 0.0
    s = kept.sum(axis=1)  # (M, K)
    row_dot = np.einsum("ank,bnk->abk", kept, kept)
    scale = np.array([np.exp(p.log_scale) for p in stats])
    sa, sb = s[:, None, :], s[None, :, :]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if unbiased:
            hsic = cross + sa * sb / ((m - 1) * (m - 2)) - 2.0 / (m - 2) * row_dot
        else:
            cx, cy = scale[:, None, None], scale[None, :, None]
            pair = cross - 2.0 / m * row_dot + sa * sb / (m * m)
            hsic = (m - 1) + cx * cy * pair - (cx * sa + cy * sb) / m
        self_h = np.diagonal(hsic, axis1=0, axis2=1).T  # (M, K)
        denom = self_h[:, None, :] * self_h[None, :, :]
        out = hsic / np.sqrt(denom)
    out[~(denom > 0)] = np.nan
    if unbiased:
        out[..., m < 4] = np.nan
        bad = np.array([p.underflows for p in stats])
        out[bad] = np.nan
        out[:, bad] = np.nan
    const = np.array([p.is_constant for p in stats])
    out[const] = np.nan
    out[:, const] = np.nan
    return out
