"""Leave-group-out RSA by exact recomputation from the prepared RDMs (ranks redone per group).

An RDM entry ``D_ij`` (1 - correlation or 1 - cosine between rows i and j) depends on rows i
and j only, so leaving a row group out keeps the entries of the kept pairs unchanged: the
leave-group-out RSA is the correlation of the two RDMs' upper triangles restricted to pairs of
kept rows. For Pearson RSA the restricted values are re-standardised; for Spearman RSA the ranks
*change* when pairs are dropped (a rank is a count over all pairs), so they are recomputed on
the kept pairs — exactly ``scipy.stats.rankdata(method="average")`` of the kept values, but in
O(N) per group from each RDM's sort order (average ranks inside the runs of tied values that
survive). Reusing the full-sample ranks would ignore the ranks' own sampling variability and is
not done.

Why the jackknife and not a bootstrap: resampling rows with replacement creates pairs of a row
with its own copy (``D = 0``) and duplicated pairs that distort the ranks; deleting groups keeps
every retained entry a real pair. The values equal ``rsa`` on the kept rows (tested ≤ 1e-10).

Cost: the sort order comes from the plain matrix's own sort
(:func:`~sim_consistency.similarity.rsa.rdm_vector_and_order`; :func:`rsa_with_leave_out`
computes the point and the leave-out values from one preparation). Per group, each model's kept
triangle is re-ranked in O(N) (N = n(n-1)/2; without ties the kept ranks in sort order are
simply 1..N_g, standardised analytically) and the M×M products are one GEMM over the kept
entries: about K times the plain RSA's cross products plus K·M re-rankings with one random
scatter each — no exact scheme avoids those (the dropped entries change every kept rank by a
per-model, per-group count; see ``benchmarks/RESULTS.md``). Memory: the M standardised
triangles of one group (``8 M N`` bytes), each RDM's sort order (4 bytes per entry, and tie
runs when there are ties) and its two row-group labels in sort order (2) — 18 bytes per entry
and model at most (:func:`rsa_leave_out_bytes`), checked against ``memory_budget`` before any
work (:func:`check_rsa_leave_out_memory`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from sim_consistency.errors import ConfigError
from sim_consistency.similarity.rsa import _DECIMALS, rdm_vector_and_order, tied_runs
from sim_consistency.similarity.streamed import DEFAULT_MEMORY_BUDGET, rsa_matrix

__all__ = [
    "RdmRanks",
    "check_rsa_leave_out_memory",
    "rdm_ranks",
    "rsa_leave_out",
    "rsa_leave_out_bytes",
    "rsa_with_leave_out",
]


@dataclass(frozen=True, eq=False)
class RdmRanks:
    """One representation's RDM upper triangle prepared for re-ranking on subsets.

    Attributes:
        values: the upper triangle, (N,), where it is needed: Pearson, or an RDM with undefined
            entries (a row with zero variance or norm); None for a finite Spearman RDM (its
            order and tied runs say everything the ranks need).
        order: the sort order of ``round(values, 12)``, (N,) (Spearman only; int32 when the
            ranks fit).
        tie_pos: the sorted positions inside runs of equal values, ascending (Spearman with tied
            values only, else ``None``): a handful at study scale (12-decimal collisions), so
            ties cost a fix-up of those positions, not a pass over N.
        tie_run: the run of each of ``tie_pos`` (0, 1, ... in order).
        corr: ``"pearson"`` or ``"spearman"``.
        length: N.
    """

    values: npt.NDArray[np.float64] | None
    order: npt.NDArray[np.integer] | None
    tie_pos: npt.NDArray[np.int64] | None
    tie_run: npt.NDArray[np.int64] | None
    corr: str
    length: int

    @property
    def finite(self) -> bool:
        """Every entry is finite (else each kept subset is checked)."""
        values = self.values
        return values is None or _cached(self, "_finite", lambda: bool(np.isfinite(values).all()))

    @property
    def tied(self) -> bool:
        """Some entries are equal (Spearman: average ranks inside runs are needed)."""
        return self.tie_pos is not None

    def standardised(self, keep: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64] | None:
        """Return ``(v - mean) / ||v - mean||`` of the (re-ranked) kept entries, or None."""
        row = np.empty(self.length)
        if not self.fill_standardised(row, keep):
            return None
        return row[keep]

    def fill_standardised(
        self,
        row: npt.NDArray[np.float64],
        keep: npt.NDArray[np.bool_],
        keep_sorted: npt.NDArray[np.bool_] | None = None,
        dropped: npt.NDArray[np.intp] | None = None,
        untied: npt.NDArray[np.float64] | None = None,
    ) -> bool:
        """Write the standardised (re-ranked) kept entries into ``row`` (N,), 0 elsewhere.

        Returns False (``row`` undefined) when the kept entries' correlation is undefined.
        The group's shared parts may be passed in: ``keep_sorted = keep[order]``, ``dropped``
        = the indices where ``keep`` is False, ``untied`` = the standardised ranks 1..N_g.
        """
        if not self.finite:
            assert self.values is not None
            if not np.isfinite(self.values[keep]).all():
                return False  # a kept row with zero variance / norm
        dropped = np.flatnonzero(~keep) if dropped is None else dropped
        kept = self.length - dropped.size
        if self.order is None:  # Pearson: the values themselves
            assert self.values is not None
            v = self.values[keep]
            mean = v.mean()
            norm = float(np.sqrt(np.einsum("i,i->", v - mean, v - mean)))
            if not (norm > 0 and np.isfinite(norm)):
                return False
            np.subtract(self.values, mean, out=row)
            row /= norm
            row[dropped] = 0.0
            return True
        kept_sorted = keep[self.order] if keep_sorted is None else keep_sorted
        idx = self.order[kept_sorted]
        # the kept entries' ranks in sort order are 1..kept; tied runs get their average below
        if untied is None:
            untied = standardised_ranks(kept)
        if untied is None:
            return False
        row[idx] = untied
        row[dropped] = 0.0
        if self.tie_pos is not None:
            return self._average_ties(row, kept_sorted, kept)
        return True

    def _average_ties(self, row: np.ndarray, kept_sorted: np.ndarray, kept: int) -> bool:
        """Give the kept members of each tied run their average rank and rescale ``row`` to the
        norm of average ranks (``sum (r - mean)^2 = (m^3 - m - sum_runs (t^3 - t)) / 12``)."""
        assert self.tie_pos is not None and self.tie_run is not None and self.order is not None
        alive = kept_sorted[self.tie_pos]
        pos = self.tie_pos[alive]
        if pos.size == 0:
            return True
        run = self.tie_run[alive]
        rank = _kept_before(kept_sorted, pos) + 1.0  # 1-based rank among the kept entries
        count = np.bincount(run)
        mean_rank = (np.bincount(run, weights=rank) / np.maximum(count, 1))[run]
        t = count[count > 1].astype(object)  # Python ints: exact
        tie_sum = int(sum(x * x * x - x for x in t))
        if tie_sum == 0:
            return True  # every tied run kept at most one member: ranks are the positions
        m = kept
        tied_sq = (m * m * m - m - tie_sum) / 12.0
        if not tied_sq > 0:
            return False
        untied_norm = np.sqrt(m * (m * m - 1.0) / 12.0)
        norm = float(np.sqrt(tied_sq))
        row *= untied_norm / norm
        row[self.order[pos]] = (mean_rank - (m + 1) / 2.0) / norm
        return True

    def sorted_pair_groups(
        self, gi: npt.NDArray[np.int64], gj: npt.NDArray[np.int64]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Return the two row groups of each pair in sort order (Spearman), for ``keep[order]``
        without a random gather per group; compact dtype (K < 2^15)."""
        if self.order is None:
            return None
        dtype = np.int8 if max(int(gi.max(initial=0)), int(gj.max(initial=0))) < 127 else np.int16
        return gi[self.order].astype(dtype), gj[self.order].astype(dtype)


def _kept_before(kept_sorted: np.ndarray, pos: np.ndarray) -> npt.NDArray[np.float64]:
    """Return how many kept entries precede each sorted position ``pos`` (ascending).

    A few positions: counts between consecutive positions (one pass up to the last); many:
    the running count at every position.
    """
    if pos.size > 1024:
        return np.cumsum(kept_sorted, dtype=np.int64)[pos].astype(np.float64) - kept_sorted[pos]
    edges = np.concatenate([[0], pos])
    between = [
        np.count_nonzero(kept_sorted[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    return np.cumsum(between, dtype=np.float64)


def standardised_ranks(kept: int) -> npt.NDArray[np.float64] | None:
    """Return the ranks 1..kept centred and scaled to unit norm (None when kept < 2)."""
    norm = float(np.sqrt(kept * (kept * kept - 1.0) / 12.0))
    if not norm > 0:
        return None
    z = np.arange(1, kept + 1, dtype=np.float64)
    z -= (kept + 1) / 2.0
    z /= norm
    return z


def _cached(obj: object, name: str, make: Any) -> Any:
    if name not in obj.__dict__:
        object.__setattr__(obj, name, make())
    return obj.__dict__[name]


def _ranks_from_parts(
    values: np.ndarray | None, order: np.ndarray | None, ties: Any, corr: str
) -> RdmRanks:
    if corr == "spearman" and order is None:  # undefined entries: sort the values themselves
        assert values is not None
        rounded = np.round(values, _DECIMALS)
        index = np.int32 if rounded.size < 2**30 else np.int64
        order = np.argsort(rounded, kind="stable").astype(index)  # NaN last, never kept
        s = rounded[order]
        ties = tied_runs(np.concatenate([[True], s[1:] != s[:-1]]))
    length = int(values.size if values is not None else order.size)  # type: ignore[union-attr]
    tie_pos, tie_run = (None, None) if ties is None else ties
    return RdmRanks(values, order, tie_pos, tie_run, corr, length)


def rdm_ranks(
    X: Any,
    *,
    rdm: Literal["correlation", "cosine"] = "correlation",
    corr: Literal["pearson", "spearman"] = "spearman",
) -> RdmRanks:
    """Return the RDM triangle of features ``X`` (n, d) prepared for :func:`rsa_leave_out`."""
    _, values, order, ties = rdm_vector_and_order(X, rdm=rdm, corr=corr)
    return _ranks_from_parts(values, order, ties, corr)


def rsa_leave_out_bytes(m: int, n: int, corr: str) -> int:
    """Return the peak bytes the point and the RSA jackknife hold for M models of n rows.

    Per triangle entry and model, the larger of the two phases. Spearman: while the point is
    computed, each RDM's sort order (4) and its doubled ranks for the point (4, spilled to the
    scratch file beyond half the budget); then the sort order, the tie runs (4, only with ties;
    counted), the pair groups in sort order (2) and one group's standardised triangle (8) — 18.
    Pearson: the values (8) and the point's centred values (8), then the values and one
    group's standardised triangle — 16.
    """
    per_entry = 4 + 4 + 2 + 8 if corr == "spearman" else 8 + 8
    return per_entry * m * (n * (n - 1) // 2)


def check_rsa_leave_out_memory(m: int, n: int, corr: str, memory_budget: int) -> None:
    """Raise :class:`ConfigError` before any work when the RSA jackknife exceeds the budget."""
    need = rsa_leave_out_bytes(m, n, corr)
    if need > memory_budget:
        raise ConfigError(
            f"rsa jackknife: {m} RDMs of n={n} rows ({n * (n - 1) // 2:,} pairs each) need "
            f"{need / 2**30:.1f} GiB (each RDM's ranks, sort order and pair groups, and one "
            f"group's standardised triangles), over the memory budget "
            f"({memory_budget / 2**30:.1f} GiB). Raise --memory_budget on a node with that "
            "much memory, compare fewer rows (--max_samples) or run RSA without --ci."
        )


def rsa_with_leave_out(
    mats: Sequence[np.ndarray],
    groups: npt.NDArray[np.int64],
    *,
    rdm: Literal["correlation", "cosine"] = "correlation",
    corr: Literal["pearson", "spearman"] = "spearman",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    device: str = "numpy",
    scratch_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return ``(point, leave_out)``: the streamed RSA matrix and its (M, M, K) leave-out values.

    One RDM and one sort per model serve both: the point is bitwise
    :func:`~sim_consistency.similarity.streamed.rsa_matrix` of ``mats`` (the same vectors and
    products) and the sort order is kept for re-ranking the kept pairs of every group.
    """
    n = mats[0].shape[0] if mats else 0
    check_rsa_leave_out_memory(len(mats), n, corr, memory_budget)
    prepared: list[RdmRanks] = []

    def prepare(X: Any) -> Any:
        vector, values, order, ties = rdm_vector_and_order(X, rdm=rdm, corr=corr)
        prepared.append(_ranks_from_parts(values, order, ties, corr))
        return vector

    point = rsa_matrix(
        mats,
        rdm=rdm,
        corr=corr,
        memory_budget=memory_budget,
        device=device,
        scratch_dir=scratch_dir,
        progress=progress,
        prepare=prepare,
    )
    return point, rsa_leave_out(prepared, groups, memory_budget=memory_budget)


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
    if any(p.length != length for p in prepared):
        raise ConfigError(
            f"jackknife: RDMs of {[p.length for p in prepared]} entries do not match "
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
    Z = buf.reshape(m, length)  # rows: each model's standardised kept entries, 0 at dropped
    for g in range(k):
        keep = (gi != g) & (gj != g)
        dropped = np.flatnonzero(~keep)
        untied = standardised_ranks(length - dropped.size)
        ok: list[int] = []
        for a, (p, sg) in enumerate(zip(prepared, sorted_groups, strict=True)):
            keep_sorted = None if sg is None else (sg[0] != g) & (sg[1] != g)
            if p.fill_standardised(Z[len(ok)], keep, keep_sorted, dropped, untied):
                ok.append(a)
        if ok:
            Zk = Z[: len(ok)]
            out[np.ix_(ok, ok, [g])] = np.clip(Zk @ Zk.T, -1.0, 1.0)[..., None]
    return out
