"""Model×model cross terms as one streamed Gram matrix, in a bounded memory budget.

For the kernel metrics every pair's expensive part is a Frobenius inner product of two
per-model n×n matrices: ``sum_ij A_ij B_ij`` of the scaled off-diagonal RBF kernels (CKA, see
:mod:`~sim_consistency.similarity.cka`) or ``z_x . z_y`` of the standardised (ranked) RDM upper
triangles (RSA). The M×M matrix of those products is the Gram matrix of the M flattened
matrices, so it is accumulated over slabs of rows: each slab of every model's matrix is formed
once (for RBF: O(slab · n · d) per model, never per pair) and the slab's M×M contribution is one
GEMM ``G += B B^T`` (O(M^2 · slab · n) in BLAS). Total RBF cost ``O(M n^2 d + M^2 n^2)``
instead of ``O(M^2 n^2 d)`` on the per-pair path.

Memory. The working set is ``M_tile × slab × n`` float64 values; ``memory_budget`` (bytes)
bounds it: the slab shrinks first, then, when even one row of every model does not fit, the
models are split in tiles and each tile pair is streamed in turn (the kernel rows of a tile are
recomputed per tile pair: more time, the same result). The per-model statistics themselves
(centred features, RDM triangles) are the callers' and are not counted.

Device. ``device="cpu"`` uses numpy; any torch device (``"cuda"``, ``"cpu"`` through torch, or
``"auto"`` = cuda when available) forms the kernel slabs and the GEMMs in torch in float64, so
results equal the numpy path to rounding (tested ≤ 1e-9).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from sim_consistency.device import resolve_device as torch_device
from sim_consistency.errors import ConfigError
from sim_consistency.similarity._arrays import row_chunks

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "check_device",
    "resolve_device",
    "gram_of_slabs",
    "rbf_cross_matrix",
    "rsa_cross_matrix",
    "parse_memory_budget",
]

#: Default working-set budget of the streamed products: 2 GiB.
DEFAULT_MEMORY_BUDGET = 2 << 30
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_memory_budget(text: str | int) -> int:
    """Return a byte count from ``"512M"``, ``"2G"``, ``"1.5g"`` or a plain integer of bytes."""
    if isinstance(text, int):
        value, unit = float(text), ""
    else:
        s = text.strip().lower().removesuffix("ib").removesuffix("b")
        unit = s[-1] if s and s[-1] in _UNITS else ""
        try:
            value = float(s[: len(s) - len(unit)])
        except ValueError:
            value = float("nan")
    if not (np.isfinite(value) and value > 0):
        raise ConfigError(
            f"memory_budget: expected a positive size such as 512M, 4G or a byte count "
            f"(got {text!r})."
        )
    return int(value * _UNITS[unit])


def check_device(device: str) -> str:
    """Return ``device`` if it names cpu, auto, torch-cpu or cuda[:k] (no CUDA check here)."""
    if device in ("cpu", "auto", "torch-cpu") or device == "cuda" or device.startswith("cuda:"):
        return device
    raise ConfigError(f"device: expected cpu, cuda[:k], auto or torch-cpu (got {device!r}).")


def resolve_device(device: str) -> str:
    """Return ``"numpy"`` for ``"cpu"``, else a torch device name (``auto``: cuda if present).

    The torch devices are checked by :func:`sim_consistency.device.resolve_device`.
    """
    if check_device(device) == "cpu":
        return "numpy"
    if device == "torch-cpu":
        return "cpu"
    resolved = torch_device(device)
    return "numpy" if resolved.type == "cpu" else str(resolved)


def _plan(m: int, n_cols: int, budget: int, slab_rows: int) -> tuple[int, int]:
    """Return ``(models per tile, rows per slab)`` so that two tiles' slabs fit ``budget``.

    ``n_cols`` counts the float64 values held per row and model (copies included).
    """
    per_row = 8 * n_cols
    rows = min(slab_rows, max(1, budget // (per_row * m)))
    if per_row * m * rows <= budget:
        return m, rows
    tile = max(1, budget // (2 * per_row))  # two tiles of one row each
    return min(tile, m), 1


def gram_of_slabs(
    m: int,
    n_rows: int,
    n_cols: int,
    slab: Callable[[int, slice, str], Any],
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    slab_rows: int = 1024,
    device: str = "numpy",
) -> npt.NDArray[np.float64]:
    """Return ``G_ab = sum_rows <S_a[rows], S_b[rows]>`` of M row-sliced matrices, (M, M).

    Args:
        m: number of models.
        n_rows, n_cols: shape of each model's (virtual) matrix ``S_a``.
        slab: ``slab(a, rows, device)`` returns rows ``rows`` of ``S_a`` as a float64 array
            (numpy for ``device="numpy"``, else a torch tensor on that device).
        memory_budget: bytes for the stacked slabs (see the module docstring).
        slab_rows: most rows per slab.
        device: ``"numpy"`` or a torch device.
    """
    tile, rows_per = _plan(m, n_cols, memory_budget, slab_rows)
    tiles = [list(range(s, min(m, s + tile))) for s in range(0, m, tile)]
    G = np.zeros((m, m), dtype=np.float64)
    for ti, ta in enumerate(tiles):
        for tb in tiles[ti:]:
            G[np.ix_(ta, tb)] = _tile_product(ta, tb, n_rows, rows_per, slab, device)
    iu = np.triu_indices(m, 1)
    G[(iu[1], iu[0])] = G[iu]
    return G


def _tile_product(
    ta: Sequence[int],
    tb: Sequence[int],
    n_rows: int,
    rows_per: int,
    slab: Callable[[int, slice, str], Any],
    device: str,
) -> npt.NDArray[np.float64]:
    same = list(ta) == list(tb)
    if device == "numpy":
        acc = np.zeros((len(ta), len(tb)), dtype=np.float64)
        for rows in row_chunks(n_rows, rows_per):
            A = np.stack([np.ravel(slab(a, rows, device)) for a in ta])
            B = A if same else np.stack([np.ravel(slab(b, rows, device)) for b in tb])
            acc += A @ B.T
        return acc
    import torch

    tacc = torch.zeros((len(ta), len(tb)), dtype=torch.float64, device=device)
    for rows in row_chunks(n_rows, rows_per):
        TA = torch.stack([slab(a, rows, device).reshape(-1) for a in ta])
        TB = TA if same else torch.stack([slab(b, rows, device).reshape(-1) for b in tb])
        tacc += TA @ TB.T
    return tacc.cpu().numpy()


def _rbf_rows_torch(
    stats: Any, rows: slice, first_col: int, device: str, cache: dict[int, Any]
) -> Any:
    """:meth:`RbfStats.kernel_rows` in torch float64 on ``device`` (same formula and order)."""
    import torch

    key = id(stats)
    if key not in cache:
        cache[key] = (
            torch.from_numpy(stats.Xc).to(device),
            torch.from_numpy(stats.sq_norms).to(device),
        )
    Xc, sq = cache[key]
    inv = 0.5 / (stats.sigma * stats.sigma)
    E = Xc[rows] @ Xc[first_col:].T
    E *= 2.0 * inv
    E -= (inv * (sq[rows] - stats.min_sq_distance))[:, None]
    E -= (inv * sq[first_col:])[None, :]
    idx = torch.arange(rows.stop - rows.start, device=device)
    E[idx, idx + rows.start - first_col] = -torch.inf
    return torch.exp_(E)


def rbf_cross_matrix(
    stats: Sequence[Any],
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    slab_rows: int = 1024,
    device: str = "numpy",
    complete: bool = False,
) -> npt.NDArray[np.float64]:
    """Return ``C_ab = sum_ij A_ij B_ij`` for the scaled off-diagonal RBF kernels of M models.

    ``stats`` are :class:`~sim_consistency.similarity.cka.RbfStats` of the same rows. A is
    symmetric, so only the block-upper part of each slab is formed (columns from the slab's
    first row on): ``C += 2 S S^T - D D^T`` with ``S`` the slabs and ``D`` their square diagonal
    blocks (counted once) — each model's kernel costs half a pass (per tile pair when
    the budget forces tiling). With ``complete`` the stats' ``row_sums`` and self-HSICs (from
    ``C_aa``) are filled in from the same pass (stats made with ``self_terms=False``).
    """
    from sim_consistency.similarity.cka import with_self_terms

    m = len(stats)
    n = stats[0].n if stats else 0
    tile, rows_per = _plan(m, n, memory_budget, slab_rows)
    tiles = [list(range(s, min(m, s + tile))) for s in range(0, m, tile)]
    cache: dict[int, Any] = {}
    C = np.zeros((m, m), dtype=np.float64)
    sums = np.zeros((m, n), dtype=np.float64)
    peaks = np.zeros(m, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # a bound far from m: redone below
        for ti, ta in enumerate(tiles):
            for tb in tiles[ti:]:
                C[np.ix_(ta, tb)] = _rbf_tile(stats, ta, tb, rows_per, device, cache, sums, peaks)
    iu = np.triu_indices(m, 1)
    C[(iu[1], iu[0])] = C[iu]
    if not complete:
        return C
    # A was scaled by a sampled upper bound m0 of m: its largest entry is exp((m0 - m)/2σ²)
    # >= 1; rescale exactly, or (entries that could overflow) stream again with the exact m.
    shift = np.zeros(m)
    for a, s in enumerate(stats):
        if s.min_is_bound and n >= 2:
            shift[a] = np.log(peaks[a]) if peaks[a] > 0 else 0.0
    if not (np.isfinite(C).all() and np.isfinite(shift).all() and shift.max(initial=0) < 300):
        from sim_consistency.similarity.cka import _min_upper

        for s in stats:
            if s.min_is_bound:
                exact = _min_upper(s.Xc, s.sq_norms, s.slab_rows)
                object.__setattr__(s, "min_sq_distance", exact)
                object.__setattr__(s, "min_is_bound", False)
        return rbf_cross_matrix(
            stats,
            memory_budget=memory_budget,
            slab_rows=slab_rows,
            device=device,
            complete=True,
        )
    f = np.exp(-shift)
    C *= np.outer(f, f)
    for a, s in enumerate(stats):
        m_exact = s.min_sq_distance - 2.0 * s.sigma * s.sigma * shift[a] if s.min_is_bound else None
        with_self_terms(s, sums[a] * f[a], C[a, a], m_exact)
    return C


def _rbf_tile(
    stats: Sequence[Any],
    ta: list[int],
    tb: list[int],
    rows_per: int,
    device: str,
    cache: dict[int, Any],
    sums: np.ndarray,
    peaks: np.ndarray,
) -> npt.NDArray[np.float64]:
    """Accumulate one tile pair of :func:`rbf_cross_matrix` (row sums and largest entries on
    diagonal tiles)."""
    same = ta == tb
    n = stats[ta[0]].n
    slabs: Callable[[list[int], slice, Any], Any]
    buf_a: Any = None
    buf_b: Any = None
    if device == "numpy":
        buf_a = np.empty(len(ta) * rows_per * n)
        buf_b = buf_a if same else np.empty(len(tb) * rows_per * n)

        def numpy_slabs(models: list[int], rows: slice, buf: Any) -> Any:
            shape = (len(models), rows.stop - rows.start, n - rows.start)
            S = buf[: int(np.prod(shape))].reshape(shape)
            for i, a in enumerate(models):
                stats[a].kernel_rows(rows, rows.start, out=S[i])
            return S

        slabs = numpy_slabs
        acc: Any = np.zeros((len(ta), len(tb)))
    else:
        import torch

        def torch_slabs(models: list[int], rows: slice, buf: Any) -> Any:
            return torch.stack(
                [_rbf_rows_torch(stats[a], rows, rows.start, device, cache) for a in models]
            )

        slabs = torch_slabs
        acc = torch.zeros((len(ta), len(tb)), dtype=torch.float64, device=device)
    for rows in row_chunks(n, rows_per):
        k = rows.stop - rows.start
        SA = slabs(ta, rows, buf_a)
        SB = SA if same else slabs(tb, rows, buf_b)
        # upper block rows count twice (A symmetric) except their square diagonal block
        DA = SA[:, :, :k].reshape(len(ta), -1)
        DB = DA if same else SB[:, :, :k].reshape(len(tb), -1)
        acc += 2.0 * (SA.reshape(len(ta), -1) @ SB.reshape(len(tb), -1).T) - DA @ DB.T
        if same:
            row_part, col_part = SA.sum(2), SA[:, :, k:].sum(1)
            top = SA.reshape(len(ta), -1).max(1)
            if device != "numpy":
                row_part, col_part = row_part.cpu().numpy(), col_part.cpu().numpy()
                top = top.values.cpu().numpy()
            sums[ta, rows] += row_part
            sums[ta, rows.stop :] += col_part
            peaks[ta] = np.maximum(peaks[ta], top)
    return acc if device == "numpy" else acc.cpu().numpy()


def rsa_cross_matrix(
    vectors: Sequence[npt.NDArray[np.float64]],
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    chunk: int = 1 << 16,
    device: str = "numpy",
) -> npt.NDArray[np.float64]:
    """Return ``z_a . z_b`` for M standardised RDM upper triangles, streamed in chunks."""
    length = vectors[0].size if vectors else 0

    def slab(a: int, rows: slice, dev: str) -> Any:
        part = vectors[a][rows]
        if dev == "numpy":
            return part
        import torch

        return torch.from_numpy(np.ascontiguousarray(part)).to(dev)

    return gram_of_slabs(
        len(vectors),
        length,
        1,
        slab,
        memory_budget=memory_budget,
        slab_rows=chunk,
        device=device,
    )
