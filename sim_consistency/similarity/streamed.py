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
recomputed per tile pair: more time, the same result). For RBF CKA the per-model centred
features are the caller's and are not counted.

RSA (:func:`rsa_matrix`) keeps each model's RDM upper triangle in compact exact form
(:class:`~sim_consistency.similarity.rsa.RdmVector`: doubled ranks in int32 for Spearman,
float64 for Pearson). Half the budget holds them in memory; when the M vectors need more, they
are spilled to a scratch file (``scratch_dir``, removed afterwards; a full disk raises
:class:`~sim_consistency.errors.OutputWriteError` naming it) and read back slab by slab; the
other half holds the float64 slabs of the tiled M×M product. Preparing one model (its RDM,
rounding keys and sort) needs about 30 bytes per triangle entry at once, outside the budget
(1.5 GB at n = 10,000). A pair is ``(r_a - c_a) . (r_b - c_b) / (‖·‖_a ‖·‖_b)``: exact integer
products of centred doubled ranks summed in float64, norms exact from the tie counts.

Device. ``device="cpu"`` uses numpy; any torch device (``"cuda"``, ``"cpu"`` through torch, or
``"auto"`` = cuda when available) forms the kernel slabs and the GEMMs in torch in float64, so
results equal the numpy path to rounding (tested ≤ 1e-9).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sim_consistency.device import resolve_device as torch_device
from sim_consistency.errors import ConfigError
from sim_consistency.io import check_free_space, write_error
from sim_consistency.similarity._arrays import row_chunks, warn_degenerate

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "RbfBlocks",
    "check_device",
    "resolve_device",
    "gram_of_slabs",
    "rbf_cross_matrix",
    "rsa_matrix",
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


def _plan(m: int, n_cols: int, budget: int, slab_rows: int, min_rows: int = 1) -> tuple[int, int]:
    """Return ``(models per tile, rows per slab)`` so that two tiles' slabs fit ``budget``.

    ``n_cols`` counts the float64 values held per row and model (copies included); slabs have
    at least ``min_rows`` rows (budgets below two such slabs are exceeded by that floor).
    """
    per_row = 8 * n_cols
    rows = min(slab_rows, max(min_rows, budget // (per_row * m)))
    if per_row * m * rows <= budget:
        return m, rows
    rows = min(slab_rows, min_rows)
    tile = max(1, budget // (2 * per_row * rows))  # two tiles of the smallest slab
    return min(tile, m), rows


def gram_of_slabs(
    m: int,
    n_rows: int,
    n_cols: int,
    slab: Callable[[int, slice, str], Any],
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    slab_rows: int = 1024,
    min_rows: int = 1,
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
        min_rows: fewest rows per slab, whatever the budget (per-slab overhead).
        device: ``"numpy"`` or a torch device.
    """
    tile, rows_per = _plan(m, n_cols, memory_budget, slab_rows, min_rows)
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


@dataclass(frozen=True)
class RbfBlocks:
    """Per-row-group parts of :func:`rbf_cross_matrix`'s sums, for the leave-group-out CKA.

    The stats' rows are sorted by group; group ``g`` is rows ``bounds[g]:bounds[g+1]``.

    Attributes:
        W: (M, M, K, K) block sums ``W_ab,gh = sum_{i in g, j in h} A_ij B_ij`` (symmetric in
            ``a, b`` and in ``g, h``); ``C_ab = sum_gh W_ab,gh``.
        R: (M, n, K) per-group row sums ``R_a,ih = sum_{j in h} A_ij``; ``A 1 = sum_h R_a,:h``.
        bounds: (K + 1,) group boundaries.
    """

    W: npt.NDArray[np.float64]
    R: npt.NDArray[np.float64]
    bounds: npt.NDArray[np.int64]


def rbf_cross_matrix(
    stats: Sequence[Any],
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    slab_rows: int = 1024,
    device: str = "numpy",
    complete: bool = False,
    bounds: npt.NDArray[np.int64] | None = None,
    blocks: bool = False,
) -> Any:
    """Return ``C_ab = sum_ij A_ij B_ij`` for the scaled off-diagonal RBF kernels of M models.

    ``stats`` are :class:`~sim_consistency.similarity.cka.RbfStats` of the same rows. A is
    symmetric, so only the block-upper part of each slab is formed (columns from the slab's
    first row on) — each model's kernel costs half a pass (per tile pair when the budget forces
    tiling).

    The sums are taken per row group (``bounds``: boundaries of groups of consecutive rows,
    default one group): slabs never straddle a group boundary and each slab's M×M GEMM is split
    by column group (the same FLOPs), giving the K×K block sums and per-group row sums of
    :class:`RbfBlocks`; ``C`` and the row sums ``A 1`` are their totals. The leave-group-out
    CKA (:mod:`~sim_consistency.uncertainty.rbf_cka`) reads them off this same pass, so a
    confidence interval costs no second pass and the point is bitwise the plain one.

    With ``complete`` the stats' ``row_sums`` and self-HSICs (from ``C_aa``) are filled in from
    the same pass (stats made with ``self_terms=False``). With ``blocks`` the result is
    ``(C, RbfBlocks)``.
    """
    from sim_consistency.similarity.cka import with_self_terms

    m = len(stats)
    n = stats[0].n if stats else 0
    bounds = np.array([0, n], dtype=np.int64) if bounds is None else np.asarray(bounds, np.int64)
    if bounds.ndim != 1 or bounds.size < 2 or bounds[0] != 0 or bounds[-1] != n:
        raise ConfigError(f"rbf_cross_matrix: bounds must run from 0 to n={n} (got {bounds}).")
    k = bounds.size - 1
    tile, rows_per = _plan(m, n, memory_budget, slab_rows)
    tiles = [list(range(s, min(m, s + tile))) for s in range(0, m, tile)]
    cache: dict[int, Any] = {}
    W = np.zeros((m, m, k, k), dtype=np.float64)
    R = np.zeros((m, n, k), dtype=np.float64)
    peaks = np.zeros(m, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # a bound far from m: redone below
        for ti, ta in enumerate(tiles):
            for tb in tiles[ti:]:
                Wt, Rt = _rbf_tile(stats, ta, tb, rows_per, bounds, device, cache, peaks)
                W[np.ix_(ta, tb)] = Wt
                if Rt is not None:
                    R[ta] = Rt
    iu = np.triu_indices(m, 1)
    W[iu[1], iu[0]] = W[iu]
    gu = np.triu_indices(k, 1)
    W[:, :, gu[1], gu[0]] = W[:, :, gu[0], gu[1]]
    if complete:
        # A was scaled by a sampled upper bound m0 of m: its largest entry is exp((m0 - m)/2σ²)
        # >= 1; rescale exactly, or (entries that could overflow) stream again with the exact m.
        shift = np.zeros(m)
        for a, s in enumerate(stats):
            if s.min_is_bound and n >= 2:
                shift[a] = np.log(peaks[a]) if peaks[a] > 0 else 0.0
        finite = np.isfinite(W).all() and np.isfinite(R).all()
        if not (finite and np.isfinite(shift).all() and shift.max(initial=0) < 300):
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
                bounds=bounds,
                blocks=blocks,
            )
        f = np.exp(-shift)
        W *= np.outer(f, f)[:, :, None, None]
        R *= f[:, None, None]
    C = W.sum(axis=(2, 3))
    if complete:
        sums = R.sum(axis=2)
        for a, s in enumerate(stats):
            m_exact = (
                s.min_sq_distance - 2.0 * s.sigma * s.sigma * shift[a] if s.min_is_bound else None
            )
            with_self_terms(s, sums[a], C[a, a], m_exact)
    return (C, RbfBlocks(W, R, bounds)) if blocks else C


def _rbf_tile(
    stats: Sequence[Any],
    ta: list[int],
    tb: list[int],
    rows_per: int,
    bounds: npt.NDArray[np.int64],
    device: str,
    cache: dict[int, Any],
    peaks: np.ndarray,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
    """Return one tile pair's block sums ``(W, R)`` of :func:`rbf_cross_matrix` (``R`` and the
    largest entries on diagonal tiles only, else ``R`` is None).

    A slab is rows ``r0:r1`` of group g, columns ``r0:``. Its column segments: the square
    diagonal block (counts once in ``W_gg``), the rest of group g (twice: its mirror is never
    formed), then each later group h (once into ``W_gh``; ``W_hg`` by symmetry). Row sums add
    each segment's row sums and, right of the diagonal block, its column sums (the mirror).
    """
    same = ta == tb
    n, k = stats[ta[0]].n, bounds.size - 1
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
        W: Any = np.zeros((len(ta), len(tb), k, k))
        R: Any = np.zeros((len(ta), n, k)) if same else None
    else:
        import torch

        def torch_slabs(models: list[int], rows: slice, buf: Any) -> Any:
            return torch.stack(
                [_rbf_rows_torch(stats[a], rows, rows.start, device, cache) for a in models]
            )

        slabs = torch_slabs
        W = torch.zeros((len(ta), len(tb), k, k), dtype=torch.float64, device=device)
        R = torch.zeros((len(ta), n, k), dtype=torch.float64, device=device) if same else None
    for g in range(k):
        start, end = int(bounds[g]), int(bounds[g + 1])
        for part in row_chunks(end - start, rows_per):
            rows = slice(start + part.start, start + part.stop)
            r0, r = rows.start, rows.stop - rows.start
            SA = slabs(ta, rows, buf_a)
            SB = SA if same else slabs(tb, rows, buf_b)
            edges = [0, r, end - r0] + [int(b) - r0 for b in bounds[g + 2 :]]
            for s in range(len(edges) - 1):
                c0, c1 = edges[s], edges[s + 1]
                if c1 <= c0:
                    continue
                h = g if s < 2 else g + s - 1
                SAs = SA[:, :, c0:c1]
                A = SAs.reshape(len(ta), -1)
                P = A @ (A if same else SB[:, :, c0:c1].reshape(len(tb), -1)).T
                W[:, :, g, h] += 2.0 * P if s == 1 else P
                if R is not None:
                    R[:, rows, h] += SAs.sum(2)
                    if s >= 1:
                        R[:, r0 + c0 : r0 + c1, g] += SAs.sum(1)
            if same:
                top = SA.reshape(len(ta), -1).max(1)
                top = top if device == "numpy" else top.values.cpu().numpy()
                peaks[ta] = np.maximum(peaks[ta], top)
    if device == "numpy":
        return W, R
    return W.cpu().numpy(), None if R is None else R.cpu().numpy()


class _VectorStore:
    """M equal-length vectors, held in memory or, past ``resident_budget`` bytes, in a scratch
    file under ``scratch_dir`` (removed on exit); read back by slices."""

    def __init__(
        self,
        m: int,
        length: int,
        dtype: np.dtype,
        resident_budget: int,
        scratch_dir: str | os.PathLike | None,
    ) -> None:
        self.length, self.dtype = length, np.dtype(dtype)
        self.nbytes = m * length * self.dtype.itemsize
        self.arrays: list[Any] = [None] * m
        self.path: Path | None = None
        self.file: Any = None
        if self.nbytes > resident_budget:
            import tempfile

            folder = Path(scratch_dir) if scratch_dir is not None else Path(tempfile.gettempdir())
            self.path = folder / f".rsa_rdm_{os.getpid()}_{uuid.uuid4().hex[:8]}.scratch"
            check_free_space(folder, self.nbytes, what="the RSA scratch file")
            try:
                folder.mkdir(parents=True, exist_ok=True)
                self.file = open(self.path, "w+b")  # noqa: SIM115 (closed in close())
            except OSError as exc:
                raise write_error(
                    self.path, exc, needed=self.nbytes, what="the RSA scratch file"
                ) from exc

    @property
    def is_spilled(self) -> bool:
        return self.file is not None

    def put(self, a: int, values: np.ndarray) -> None:
        if self.file is None:
            self.arrays[a] = values
            return
        try:
            self.file.seek(a * self.length * self.dtype.itemsize)
            self.file.write(np.ascontiguousarray(values, dtype=self.dtype).data)
            self.file.flush()
        except OSError as exc:
            raise write_error(
                self.path or "", exc, needed=self.nbytes, what="the RSA scratch file"
            ) from exc

    def get(self, a: int, rows: slice) -> np.ndarray:
        if self.file is None:
            return self.arrays[a][rows]
        out = np.empty(rows.stop - rows.start, dtype=self.dtype)
        self.file.seek((a * self.length + rows.start) * self.dtype.itemsize)
        self.file.readinto(out.data.cast("B"))
        return out

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        self.arrays = []

    def __enter__(self) -> _VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Fewest triangle entries per RSA slab: keeps a tiny budget from one-entry slabs.
RSA_MIN_SLAB = 4096


def rsa_matrix(
    features: Sequence[Any],
    *,
    rdm: str = "correlation",
    corr: str = "spearman",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    chunk: int = 1 << 20,
    device: str = "numpy",
    scratch_dir: str | os.PathLike | None = None,
    progress: bool = False,
    on_spill: Callable[[Path], None] | None = None,
    prepare: Callable[[Any], Any] | None = None,
) -> npt.NDArray[np.float64]:
    """Return the (M, M) RSA matrix of M representations of the same rows, in bounded memory.

    Each model's RDM triangle is prepared once (:func:`~sim_consistency.similarity.rsa.
    rdm_vector`) into a store bounded by half of ``memory_budget`` (spilled to a scratch file in
    ``scratch_dir``, default the system temp folder, when larger); the M×M Pearson-of-ranks
    product is then streamed in ``chunk``-entry slabs, tiled within the other half. NaN rows and
    columns (with a warning) for representations whose RDM is constant or undefined.
    ``on_spill`` is called with the scratch file's path when spilling (tests, logs).
    ``prepare(X)`` replaces :func:`~sim_consistency.similarity.rsa.rdm_vector` (it must return
    the same vector; the jackknife keeps each RDM's sort order from the same sort).
    """
    from sim_consistency.progress import progress_bar
    from sim_consistency.similarity.rsa import rdm_vector, rdm_vector_dtype

    m = len(features)
    out = np.full((m, m), np.nan)
    if m == 0:
        return out
    n = int(np.shape(features[0])[0])
    length = n * (n - 1) // 2
    dtype = rdm_vector_dtype(corr, n)
    offsets = np.zeros(m)
    norms = np.full(m, np.nan)
    with _VectorStore(m, length, dtype, memory_budget // 2, scratch_dir) as store:
        if store.is_spilled and on_spill is not None and store.path is not None:
            on_spill(store.path)
        for a, X in enumerate(progress_bar(features, desc="rdm ranks", disable=not progress)):
            make = prepare or (lambda Z: rdm_vector(Z, rdm=rdm, corr=corr))  # type: ignore[arg-type]
            vec = make(X)
            if vec.n != n:
                raise ConfigError(
                    f"rsa: features[{a}] has {vec.n} rows but features[0] has {n}; features "
                    "of different subsets cannot be compared."
                )
            if vec.values is not None:
                store.put(a, vec.values)
                offsets[a], norms[a] = vec.offset, vec.norm
            del vec
        ok = np.flatnonzero(np.isfinite(norms))

        def slab(i: int, rows: slice, dev: str) -> Any:
            raw = store.get(int(ok[i]), rows)
            if dev == "numpy":
                part = raw.astype(np.float64)
                part -= offsets[ok[i]]
                return part
            import torch

            part_t = torch.from_numpy(raw).to(dev).to(torch.float64)
            return part_t.sub_(float(offsets[ok[i]]))

        if ok.size == 0:
            warn_degenerate("rsa (constant RDM or a row with zero variance)")
            return out
        resident = store.nbytes if not store.is_spilled else 0
        G = gram_of_slabs(
            len(ok),
            length,
            2,  # the raw slice and its float64 copy
            slab,
            memory_budget=max(1, memory_budget - resident),
            slab_rows=chunk,
            min_rows=min(RSA_MIN_SLAB, max(1, length)),
            device=device,
        )
    if ok.size < m:
        warn_degenerate("rsa (constant RDM or a row with zero variance)")
    scale = norms[ok]
    out[np.ix_(ok, ok)] = np.clip(G / np.outer(scale, scale), -1.0, 1.0)
    return out
