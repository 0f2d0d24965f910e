"""Leave-group-out RSA by exact recomputation from the prepared RDMs (ranks redone per group).

An RDM entry ``D_ij`` (1 - correlation or 1 - cosine between rows i and j) depends on rows i
and j only, so leaving a row group out keeps the entries of the kept pairs unchanged: the
leave-group-out RSA is the correlation of the two RDMs' upper triangles restricted to pairs of
kept rows. For Pearson RSA the restricted values are re-standardised; for Spearman RSA the ranks
*change* when pairs are dropped (a rank is a count over all pairs), so they are recomputed on
the kept pairs — exactly ``scipy.stats.rankdata(method="average")`` of the kept values, but in
O(N) per group from each RDM's sort order computed once (average ranks inside the runs of tied
values that survive). Reusing the full-sample ranks would ignore the ranks' own sampling
variability and is not done.

Why the jackknife and not a bootstrap: resampling rows with replacement creates pairs of a row
with its own copy (``D = 0``) and duplicated pairs that distort the ranks; deleting groups keeps
every retained entry a real pair. The values equal ``rsa`` on the kept rows (tested ≤ 1e-10).

Cost and memory: per group, each model's kept triangle is ranked (O(N), N = n(n-1)/2) and the
M×M products are one GEMM over the kept entries, so the CI costs about K times the plain RSA
cross products; the M standardised triangles of one group are held at once (``8 M N`` bytes)
and, for Spearman, each RDM's two row-group labels in its sort order (``2 M N`` bytes: the kept
mask in sort order without a random gather per group), checked against ``memory_budget``.
Without ties the kept ranks are the running count of kept entries (no tie averaging).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from sim_consistency.errors import ConfigError
from sim_consistency.similarity.rsa import _DECIMALS, rdm_upper
from sim_consistency.similarity.streamed import DEFAULT_MEMORY_BUDGET

__all__ = [
    "RdmRanks",
    "check_rsa_leave_out_memory",
    "rdm_ranks",
    "rsa_leave_out",
    "rsa_leave_out_bytes",
]


@dataclass(frozen=True, eq=False)
class RdmRanks:
    """One representation's RDM upper triangle prepared for re-ranking on subsets.

    Attributes:
        values: the upper triangle (rounded to 12 decimals for Spearman, as ``rsa``), (N,).
        order: a stable argsort of ``values``, (N,) (Spearman only, else ``None``; int32 when
            N < 2^31).
        runs: run id of each sorted position; equal values share a run (Spearman with tied
            values only, else ``None``).
        corr: ``"pearson"`` or ``"spearman"``.
    """

    values: npt.NDArray[np.float64]
    order: npt.NDArray[np.integer] | None
    runs: npt.NDArray[np.integer] | None
    corr: str

    @property
    def finite(self) -> bool:
        """Every entry is finite (else each kept subset is checked)."""
        return _cached(self, "_finite", lambda: bool(np.isfinite(self.values).all()))

    @property
    def tied(self) -> bool:
        """Some entries are equal (Spearman: average ranks inside runs are needed)."""
        return self.runs is not None

    def standardised(
        self,
        keep: npt.NDArray[np.bool_],
        keep_sorted: npt.NDArray[np.bool_] | None = None,
        out: npt.NDArray[np.float64] | None = None,
    ) -> npt.NDArray[np.float64] | None:
        """Return ``(v - mean) / ||v - mean||`` of the (re-ranked) kept entries, or None.

        ``keep_sorted``: ``keep[order]`` when the caller has it (saves a gather); ``out``: a
        float64 buffer of ``keep.sum()`` values to write into.
        """
        if not self.finite and not np.isfinite(self.values[keep]).all():
            return None  # a kept row with zero variance / norm
        if self.order is None:
            v = self.values[keep]
        else:
            kept_sorted = keep[self.order] if keep_sorted is None else keep_sorted
            pos = np.cumsum(kept_sorted, dtype=np.float64)[kept_sorted]
            if self.runs is not None:
                run = self.runs[kept_sorted]
                pos = (np.bincount(run, weights=pos) / np.maximum(np.bincount(run), 1))[run]
            full = np.empty(self.values.size)
            full[self.order[kept_sorted]] = pos
            v = full[keep]
        if not self.finite and not np.isfinite(v).all():
            return None
        z = np.subtract(v, v.mean(), out=out)  # into the caller's buffer: no extra copy
        norm = float(np.sqrt(np.einsum("i,i->", z, z)))  # not BLAS: no thread wake-up per call
        if not norm > 0:
            return None
        z /= norm
        return z

    def sorted_pair_groups(
        self, gi: npt.NDArray[np.int64], gj: npt.NDArray[np.int64]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Return the two row groups of each pair in sort order (Spearman), for ``keep[order]``
        without a random gather per group; compact dtype (K < 2^15)."""
        if self.order is None:
            return None
        dtype = np.int8 if max(int(gi.max(initial=0)), int(gj.max(initial=0))) < 127 else np.int16
        return gi[self.order].astype(dtype), gj[self.order].astype(dtype)


def _cached(obj: object, name: str, make: Any) -> Any:
    if name not in obj.__dict__:
        object.__setattr__(obj, name, make())
    return obj.__dict__[name]


def rdm_ranks(
    X: Any,
    *,
    rdm: Literal["correlation", "cosine"] = "correlation",
    corr: Literal["pearson", "spearman"] = "spearman",
) -> RdmRanks:
    """Return the RDM triangle of features ``X`` (n, d) prepared for :func:`rsa_leave_out`."""
    v = rdm_upper(X, rdm=rdm)
    if corr == "pearson":
        return RdmRanks(v, None, None, corr)
    if corr != "spearman":
        raise ConfigError(f"rsa: unknown corr {corr!r}. Choose pearson or spearman.")
    v = np.round(v, _DECIMALS)
    index = np.int32 if v.size < 2**31 else np.int64
    order = np.argsort(v, kind="stable").astype(index)
    s = v[order]
    new_run = s[1:] != s[:-1]
    runs = None
    if not new_run.all():  # ties: average ranks need the runs
        runs = np.concatenate([[0], np.cumsum(new_run)]).astype(index)
    del s, new_run
    return RdmRanks(v, order, runs, corr)


def rsa_leave_out_bytes(m: int, n: int, corr: str) -> int:
    """Return the bytes :func:`rdm_ranks` and :func:`rsa_leave_out` hold for M models of n rows.

    Per triangle entry and model: the values (8), for Spearman the sort order and tie runs
    (4 + 4) and the pair groups in sort order (2), and one group's standardised triangle (8).
    """
    per_entry = 8 + 8 + (10 if corr == "spearman" else 0)
    return per_entry * m * (n * (n - 1) // 2)


def check_rsa_leave_out_memory(m: int, n: int, corr: str, memory_budget: int) -> None:
    """Raise :class:`ConfigError` before any work when the RSA jackknife exceeds the budget."""
    need = rsa_leave_out_bytes(m, n, corr)
    if need > memory_budget:
        raise ConfigError(
            f"rsa jackknife: {m} RDMs of n={n} rows ({n * (n - 1) // 2:,} pairs each) need "
            f"{need / 2**30:.1f} GiB (each RDM's triangle, sort order and pair groups, and one "
            f"group's standardised triangles), over the memory budget "
            f"({memory_budget / 2**30:.1f} GiB). Raise --memory_budget on a node with that "
            "much memory, compare fewer rows (--max_samples) or run RSA without --ci."
        )


def _upper_pair_groups(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = groups.size
    iu, ju = np.triu_indices(n, 1)
    return groups[iu], groups[ju]


def rsa_leave_out(
    prepared: Sequence[RdmRanks],
    groups: npt.NDArray[np.int64],
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> npt.NDArray[np.float64]:
    """Return RSA of every model pair with each row group left out, (M, M, K).

    Args:
        prepared: :func:`rdm_ranks` of M representations of the same rows.
        groups: row-group label of each row, (n,).
        memory_budget: bytes for one group's M standardised triangles.

    Returns:
        ``theta_(g)``, clipped to [-1, 1] as ``rsa``; NaN where an RDM is undefined.
    """
    groups = np.asarray(groups)
    n = groups.size
    length = n * (n - 1) // 2
    m = len(prepared)
    if any(p.values.size != length for p in prepared):
        raise ConfigError(
            f"jackknife: RDMs of {[p.values.size for p in prepared]} entries do not match "
            f"{n} group labels ({length} pairs)."
        )
    spearman = any(p.order is not None for p in prepared)
    need = (8 + (2 if spearman else 0)) * m * length  # standardised triangles + group labels
    if need > memory_budget:
        raise ConfigError(
            f"rsa jackknife: {m} RDMs of n={n} rows need {need / 2**30:.1f} GiB (one group's "
            f"standardised triangles, and each RDM's pair groups in sort order for Spearman), "
            f"over the memory budget ({memory_budget / 2**30:.1f} GiB); raise "
            "memory_budget or use fewer rows or models."
        )
    gi, gj = _upper_pair_groups(groups)
    k = int(groups.max()) + 1
    out = np.full((m, m, k), np.nan)
    sorted_groups = [p.sorted_pair_groups(gi, gj) for p in prepared]
    buf = np.empty(m * length)
    for g in range(k):
        keep = (gi != g) & (gj != g)
        kept = int(keep.sum())
        Z = buf[: m * kept].reshape(m, kept)  # each model's standardised triangle, in place
        ok: list[int] = []
        for a, (p, sg) in enumerate(zip(prepared, sorted_groups, strict=True)):
            keep_sorted = None if sg is None else (sg[0] != g) & (sg[1] != g)
            if p.standardised(keep, keep_sorted, out=Z[len(ok)]) is not None:
                ok.append(a)
        if ok:
            Zk = Z[: len(ok)]
            out[np.ix_(ok, ok, [g])] = np.clip(Zk @ Zk.T, -1.0, 1.0)[..., None]
    return out
