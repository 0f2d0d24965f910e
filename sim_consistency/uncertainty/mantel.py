"""Uncertainty of cross-dataset consistency: Mantel permutation test, bootstrap over models.

The consistency of two datasets (:func:`~sim_consistency.similarity.consistency`) is the
Pearson or Spearman correlation of the strict upper triangles of their M×M model similarity
matrices. Its M(M-1)/2 pairs are not independent — every model appears in M-1 of them — so
neither the textbook p-value of a correlation nor a bootstrap over pairs is valid. Both
procedures here resample *models*:

* **Mantel test** (Mantel, 1967, "The detection of disease clustering and a generalized
  regression approach", Cancer Res. 27:209): under the null of no association the model labels
  of one matrix are exchangeable, so rows and columns of B are permuted together
  (``B[p][:, p]``) and the correlation recomputed. p-value ``(1 + #{stat_perm >= stat}) /
  (1 + n_permutations)`` (Phipson & Smyth, 2010: never 0, exact level under the null);
  ``alternative="greater"`` (default, Mantel's one-sided test for positive consistency) or
  ``"two-sided"`` (on ``|r|``). For Spearman the ranks of B's triangle are computed once and
  permuted with it (a permutation of models permutes the pairs, so the multiset of ranks is
  unchanged).
* **Bootstrap over models** (Efron & Tibshirani, 1993, percentile interval): M models drawn
  with replacement; the pairs of the resampled set are all (i < j) positions of the draw,
  *except* pairs of a model with its own copy, which are dropped (their "similarity" is the
  self-similarity on the diagonal, not a pair of two models); a pair of two distinct models
  drawn k and l times counts k·l times.

Both need finite matrices over the same models (the NaN handling of ``consistency`` would
change the pair set between permutations): a NaN entry is an error naming the models.

**Model-set restrictions** (``--set_a/--set_b``: the pairs ``(a, b)``, ``a`` in A, ``b`` in B,
``a != b``). A permutation of all models would carry restricted pairs onto pairs outside the
restriction (e.g. two supervised models onto a supervised–CLIP pair), so the statistic would be
compared with correlations over other pair sets: not a test of the restricted consistency. The
permutations used are those that map the pair set onto itself: every model is permuted only
among the models of its *stratum* — its membership ``(in A, in B)``: A only, B only, both —
so ``a`` stays in A and ``b`` in B. Under the null that the model labels are exchangeable within
each stratum (Mantel's null, restricted to the sets), each such permutation of B's labels leaves
the joint distribution unchanged and the p-value keeps its exact level (the group of within-
stratum permutations acts on the pairs; Phipson & Smyth's ``(1 + b)/(1 + N)`` holds for Monte
Carlo draws from it). For ``A = B`` this is the all-pairs Mantel test on the set's models; for
disjoint sets it permutes the rows and the columns of the A×B cross block independently. Its
resolution is limited by the number of distinct permutations ``prod_s |s|!``: p is never below
about ``1/prod_s |s|!`` (recorded in the note when under 1000); with one model per stratum there
is nothing to permute and p is NaN. The bootstrap resamples models *within* each stratum
(stratified bootstrap): its interval is for new models drawn from each set. A stratum of one
model cannot be resampled (the interval would be conditional on that model, not over the set),
so the interval is NaN with the reason recorded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

from sim_consistency.errors import ConfigError
from sim_consistency.similarity.consistency import MIN_PAIRS, _check_matrix, pair_values

__all__ = [
    "ALPHA",
    "MantelResult",
    "mantel_test",
    "bootstrap_models_ci",
    "consistency_ci",
    "consistency_tests",
    "n_permutations_possible",
]


@dataclass(frozen=True)
class MantelResult:
    """The correlation of two similarity matrices with its Mantel p-value and bootstrap CI.

    Attributes:
        statistic: the correlation (bitwise what ``consistency`` reports for the pair).
        method: ``"pearson"`` or ``"spearman"``.
        p_value: Mantel permutation p-value with the +1 correction.
        n_permutations: permutations drawn.
        alternative: ``"greater"`` or ``"two-sided"``.
        ci_low, ci_high: bootstrap-over-models percentile interval (NaN when not computed).
        level: its nominal coverage.
        n_bootstrap: bootstrap replicates (0 when not computed).
        seed: the seed of both procedures.
        n_models: M.
    """

    statistic: float
    method: str
    p_value: float
    n_permutations: int
    alternative: str
    ci_low: float
    ci_high: float
    level: float
    n_bootstrap: int
    seed: int
    n_models: int

    def to_metadata(self) -> dict[str, Any]:
        """Return the procedure's settings as metadata (no numbers of the result)."""
        return {
            "p_value_method": f"Mantel permutation test (Mantel 1967), models permuted, "
            f"{self.alternative}, p = (1 + #extreme) / (1 + n_permutations)",
            "n_permutations": self.n_permutations,
            "ci_method": "bootstrap over models, percentile; self-copy pairs dropped",
            "n_bootstrap": self.n_bootstrap,
            "ci_level": self.level,
            "seed": self.seed,
        }


Pairs = tuple[np.ndarray, np.ndarray]


def _pairs_or_upper(m: int, pairs: Pairs | None) -> Pairs:
    """Return the pair index arrays: ``pairs``, or every strict-upper-triangle pair."""
    if pairs is None:
        return np.triu_indices(m, 1)
    i, j = (np.asarray(p, dtype=np.int64) for p in pairs)
    if i.shape != j.shape or i.ndim != 1 or (i == j).any() or i.min(initial=0) < 0:
        raise ConfigError("mantel: pairs must be two equal-length index arrays of distinct models.")
    if max(i.max(initial=0), j.max(initial=0)) >= m:
        raise ConfigError(f"mantel: a pair index is out of range for {m} models.")
    return i, j


def _strata(m: int, strata: Any) -> list[np.ndarray]:
    """Return the model indices of each stratum (one stratum of all models by default)."""
    if strata is None:
        return [np.arange(m)]
    labels = np.asarray(strata)
    if labels.shape != (m,):
        raise ConfigError(f"mantel: {labels.shape} stratum labels for {m} models.")
    return [np.flatnonzero(labels == v) for v in dict.fromkeys(labels.tolist())]


def _check_preserved(pairs: Pairs, classes: list[np.ndarray], m: int) -> None:
    """Raise unless every within-stratum permutation maps the pair set onto itself."""
    label = np.empty(m, dtype=np.int64)
    for c, idx in enumerate(classes):
        label[idx] = c
    kinds = {(int(a), int(b)) for a, b in zip(label[pairs[0]], label[pairs[1]], strict=True)}
    kinds |= {(b, a) for a, b in kinds}
    sizes = [idx.size for idx in classes]
    want = sum(sizes[a] * sizes[b] if a != b else sizes[a] * (sizes[a] - 1) for a, b in kinds) // 2
    if len({frozenset(p) for p in zip(*(x.tolist() for x in pairs), strict=True)}) != want:
        raise ConfigError(
            "mantel: the pairs are not every pair between (and within) the strata they connect; "
            "permuting models within strata would not map them onto themselves."
        )


def _check(
    A: Any, B: Any, method: str, pairs: Pairs | None = None
) -> tuple[np.ndarray, np.ndarray, Pairs]:
    if method not in ("pearson", "spearman"):
        raise ConfigError(f"mantel: method must be 'pearson' or 'spearman' (got {method!r}).")
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape != B.shape:
        raise ConfigError(
            f"mantel: need two square matrices over the same models (got {A.shape} and {B.shape})."
        )
    m = A.shape[0]
    iu = _pairs_or_upper(m, pairs)
    if iu[0].size < MIN_PAIRS:
        raise ConfigError(f"mantel: {iu[0].size} model pair(s), fewer than {MIN_PAIRS}.")
    for name, X in (("A", A), ("B", B)):
        bad = ~np.isfinite(X[iu])
        if bad.any():
            i, j = iu[0][bad][0], iu[1][bad][0]
            raise ConfigError(
                f"mantel: matrix {name} has {int(bad.sum())} NaN/inf pair(s), the first at "
                f"models ({i}, {j}); permutation and bootstrap need every pair defined."
            )
    return A, B, iu


def _standardise(v: np.ndarray) -> np.ndarray:
    v = v - v.mean(axis=-1, keepdims=True)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _point(x: np.ndarray, y: np.ndarray, method: str) -> float:
    """The correlation exactly as ``consistency`` computes it (scipy)."""
    if method == "pearson":
        return float(stats.pearsonr(x, y)[0])
    return float(stats.spearmanr(x, y)[0])


def mantel_test(
    A: Any,
    B: Any,
    *,
    method: Literal["pearson", "spearman"] = "pearson",
    n_permutations: int = 9999,
    alternative: Literal["greater", "two-sided"] = "greater",
    seed: int = 0,
    chunk: int = 1000,
    pairs: Pairs | None = None,
    strata: Any = None,
) -> tuple[float, float]:
    """Return ``(statistic, p_value)`` of the Mantel test of two (M, M) similarity matrices.

    Args:
        A, B: symmetric similarity matrices over the same M models in the same order.
        method: correlation of the upper triangles.
        n_permutations: model permutations drawn (seeded).
        alternative: ``"greater"`` (one-sided, positive association) or ``"two-sided"``.
        seed: seed of the permutations.
        chunk: permutations evaluated per vectorised step.
        pairs: ``(i, j)`` model index arrays of the pairs compared (default: every pair of
            the strict upper triangle).
        strata: a label per model; models are permuted only within their stratum (see the
            module docstring; default: one stratum). The pairs must be mapped onto
            themselves by such permutations (checked).
    """
    A, B, (iu, ju) = _check(A, B, method, pairs)
    if alternative not in ("greater", "two-sided"):
        raise ConfigError(
            f"mantel: alternative must be greater or two-sided (got {alternative!r})."
        )
    if not (isinstance(n_permutations, int) and n_permutations >= 1):
        raise ConfigError(f"mantel: n_permutations must be >= 1 (got {n_permutations!r}).")
    m = A.shape[0]
    classes = _strata(m, strata)
    if pairs is not None or len(classes) > 1:
        _check_preserved((iu, ju), classes, m)
    x, y = A[iu, ju], B[iu, ju]
    stat = _point(x, y, method)
    if method == "spearman":
        x = stats.rankdata(x)
        ranks = np.zeros_like(B)
        ranks[iu, ju] = stats.rankdata(y)
        B = ranks + ranks.T
    zx = _standardise(x)
    rng = np.random.default_rng(seed)
    observed = float(zx @ _standardise(B[iu, ju]))
    extreme = 0
    tol = 1e-12
    for start in range(0, n_permutations, chunk):
        p = _within_strata(rng, classes, m, min(chunk, n_permutations - start))
        perm = _standardise(B[p[:, iu], p[:, ju]]) @ zx
        if alternative == "greater":
            extreme += int((perm >= observed - tol).sum())
        else:
            extreme += int((np.abs(perm) >= abs(observed) - tol).sum())
    return stat, (1 + extreme) / (1 + n_permutations)


def _within_strata(
    rng: np.random.Generator, classes: list[np.ndarray], m: int, count: int
) -> npt.NDArray[np.int64]:
    """Return ``count`` random permutations of ``range(m)`` that keep each stratum in place.

    With one stratum of all models this is exactly ``rng.permuted`` of ``range(m)`` rows.
    """
    p = np.tile(np.arange(m), (count, 1))
    for idx in classes:
        if idx.size > 1:
            p[:, idx] = idx[rng.permuted(np.tile(np.arange(idx.size), (count, 1)), axis=1)]
    return p


def bootstrap_models_ci(
    A: Any,
    B: Any,
    *,
    method: Literal["pearson", "spearman"] = "pearson",
    n_bootstrap: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    pairs: Pairs | None = None,
    strata: Any = None,
) -> tuple[float, float]:
    """Return the percentile bootstrap-over-models interval of the matrices' correlation.

    Resamples models with replacement (within each stratum, ``strata`` as
    :func:`mantel_test`); the pairs of a replicate are the images of ``pairs`` (default: the
    strict upper triangle) under the draw, and pairs of a model with its own copy are dropped
    (see the module docstring). Replicates whose correlation is undefined (fewer than 3 pairs
    of distinct models, constant values) are skipped; the interval is NaN when more than half
    are, or when a stratum has a single model (nothing to resample).
    """
    A, B, (iu, ju) = _check(A, B, method, pairs)
    if not 0 < level < 1:
        raise ConfigError(f"bootstrap: level must be in (0, 1) (got {level!r}).")
    m = A.shape[0]
    classes = _strata(m, strata)
    if pairs is not None or len(classes) > 1:
        _check_preserved((iu, ju), classes, m)
    if any(idx.size < 2 for idx in classes):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = np.empty((n_bootstrap, m), dtype=np.int64)
    for idx in classes:  # one stratum: exactly rng.integers(0, m, size=(n_bootstrap, m))
        draws[:, idx] = idx[rng.integers(0, idx.size, size=(n_bootstrap, idx.size))]
    values = np.full(n_bootstrap, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        for r, d in enumerate(draws):
            a, b = d[iu], d[ju]
            keep = a != b
            x, y = A[a[keep], b[keep]], B[a[keep], b[keep]]
            if x.size >= MIN_PAIRS and np.ptp(x) > 0 and np.ptp(y) > 0:
                if method == "spearman":
                    x, y = stats.rankdata(x), stats.rankdata(y)
                values[r] = float(_standardise(x) @ _standardise(y))
    ok = values[np.isfinite(values)]
    if ok.size < n_bootstrap / 2:
        return float("nan"), float("nan")
    lo, hi = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _restricted_layout(
    common: list[str],
    model_pairs: Sequence[tuple[str, str]] | None,
    model_sets: tuple[Sequence[str], Sequence[str]] | None,
) -> tuple[list[str], list[tuple[str, str]], Pairs | None, Any]:
    """Return the models, the pairs (ids), their index arrays and the strata of a comparison.

    Without a restriction: every upper-triangle pair of ``common``, one stratum. With one: the
    members of A ∪ B among ``common``, the restricted pairs they share (in the given order, as
    ``consistency`` takes them) and each model's membership ``(in A, in B)`` as its stratum.
    """
    if model_pairs is None:
        return common, [(a, b) for i, a in enumerate(common) for b in common[i + 1 :]], None, None
    if model_sets is None:
        raise ConfigError(
            "mantel: a model-pair restriction needs its two model sets (model_sets=(A, B)) to "
            "know which permutations keep the pairs."
        )
    in_a, in_b = set(model_sets[0]), set(model_sets[1])
    shared = set(common)
    models = [m for m in common if m in in_a or m in in_b]
    pairs = [(a, b) for a, b in model_pairs if a in shared and b in shared]
    index = {m: k for k, m in enumerate(models)}
    if any(a not in index or b not in index for a, b in pairs):
        raise ConfigError("mantel: a restricted pair has a model outside both model sets.")
    idx = (
        np.array([index[a] for a, _ in pairs], dtype=np.int64),
        np.array([index[b] for _, b in pairs], dtype=np.int64),
    )
    strata = np.array([2 * (m in in_a) + (m in in_b) for m in models])
    return models, pairs, idx, strata


def n_permutations_possible(strata: Any) -> int:
    """Return the number of distinct within-stratum permutations, ``prod_s |s|!``."""
    sizes = np.unique(np.asarray(strata), return_counts=True)[1]
    return int(np.prod([math.factorial(int(k)) for k in sizes], dtype=object))


def consistency_ci(
    matrix_a: pd.DataFrame,
    matrix_b: pd.DataFrame,
    *,
    method: Literal["pearson", "spearman"] = "pearson",
    n_permutations: int = 9999,
    n_bootstrap: int = 2000,
    level: float = 0.95,
    alternative: Literal["greater", "two-sided"] = "greater",
    seed: int = 0,
    model_pairs: Sequence[tuple[str, str]] | None = None,
    model_sets: tuple[Sequence[str], Sequence[str]] | None = None,
) -> MantelResult:
    """Return the consistency of two datasets' matrices with Mantel p-value and bootstrap CI.

    The models both matrices hold are aligned by id (sorted, as ``consistency`` does), so
    ``statistic`` is bitwise ``consistency({da: matrix_a, db: matrix_b}, method,
    model_pairs=model_pairs).loc[da, db]``.

    Args:
        matrix_a, matrix_b: (M, M) DataFrames indexed by model id on both axes.
        method: ``"pearson"`` or ``"spearman"``.
        n_permutations: Mantel permutations (0: no test, p-value NaN).
        n_bootstrap: bootstrap replicates (0: no interval).
        level: nominal coverage of the interval.
        alternative: of the Mantel test.
        seed: seed of both procedures (recorded).
        model_pairs: a model-pair restriction (``model_set_pairs``), or None for all pairs.
        model_sets: the restriction's two model sets (ids of A, ids of B); required with
            ``model_pairs``: models are permuted and resampled within their membership
            stratum (see the module docstring). The p-value is NaN when no model can move.
    """
    _check_matrix("matrix_a", matrix_a)
    _check_matrix("matrix_b", matrix_b)
    common = sorted(m for m in matrix_a.index if m in set(matrix_b.index))
    models, pairs, idx, strata = _restricted_layout(common, model_pairs, model_sets)
    A = matrix_a.loc[models, models].to_numpy(dtype=np.float64)
    B = matrix_b.loc[models, models].to_numpy(dtype=np.float64)
    stat = _point(pair_values(matrix_a, pairs), pair_values(matrix_b, pairs), method)
    options: dict[str, Any] = {"method": method, "seed": seed, "pairs": idx, "strata": strata}
    p = float("nan")
    if n_permutations:
        if strata is None or n_permutations_possible(strata) > 1:
            _, p = mantel_test(
                A, B, n_permutations=n_permutations, alternative=alternative, **options
            )
        else:
            _check(A, B, method, idx)
    lo = hi = float("nan")
    if n_bootstrap:
        lo, hi = bootstrap_models_ci(A, B, n_bootstrap=n_bootstrap, level=level, **options)
    return MantelResult(
        stat, method, p, n_permutations, alternative, lo, hi, level, n_bootstrap, seed, len(models)
    )


def _restriction_note(
    matrix_a: pd.DataFrame,
    matrix_b: pd.DataFrame,
    model_pairs: Sequence[tuple[str, str]],
    model_sets: tuple[Sequence[str], Sequence[str]],
    n_permutations: int,
    n_bootstrap: int,
) -> str:
    """Return what limits the tests under a restriction (empty when nothing does)."""
    common = sorted(m for m in matrix_a.index if m in set(matrix_b.index))
    _, _, _, strata = _restricted_layout(common, model_pairs, model_sets)
    notes = []
    possible = n_permutations_possible(strata)
    if n_permutations and possible == 1:
        notes.append("no Mantel p-value: one model per model-set stratum, nothing to permute")
    elif n_permutations and possible < 1000:
        notes.append(
            f"only {possible} within-set model permutations: the p-value cannot go below "
            f"about 1/{possible}"
        )
    sizes = np.unique(strata, return_counts=True)[1]
    if n_bootstrap and (sizes < 2).any():
        notes.append(
            "no bootstrap interval: a model-set stratum (A only, B only, both) has one model, "
            "which cannot be resampled"
        )
    return "; ".join(notes)


#: A consistency value counts as resolved when its Mantel p-value is below this and its
#: bootstrap interval excludes 0 (heatmap cells that fail either are hatched).
ALPHA = 0.05


def consistency_tests(
    matrices: Mapping[str, pd.DataFrame],
    method: Literal["pearson", "spearman"] = "pearson",
    *,
    model_pairs: Sequence[tuple[str, str]] | None = None,
    model_sets: tuple[Sequence[str], Sequence[str]] | None = None,
    n_permutations: int = 999,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Return :func:`consistency_ci` of every pair of datasets as one row each (a before b).

    Columns ``dataset_a, dataset_b, consistency, p_value, ci_low, ci_high, n_models,
    n_permutations, n_bootstrap, note, tested, resolved``. ``consistency`` is bitwise the entry
    of :func:`~sim_consistency.similarity.consistency`'s table; ``resolved`` is ``p_value <
    ALPHA`` (when the test ran) and an interval that excludes 0 (when it was computed; an
    undefined interval is not resolved). Pairs where the procedures do not apply keep their
    correlation with NaN p-value and interval, ``tested`` and ``resolved`` False and the
    reason in ``note``: NaN similarities, fewer than 3 shared pairs, a model-pair restriction
    without its ``model_sets``. Under a restriction (``model_pairs`` with ``model_sets``) the
    models are permuted and resampled within their set-membership stratum (module docstring);
    ``note`` says when that leaves no p-value or interval, or a coarse p-value. The seed is the
    same for every pair of datasets.
    """
    import warnings

    from sim_consistency.similarity import consistency

    with warnings.catch_warnings():  # the caller's own consistency() call warns once already
        warnings.simplefilter("ignore")
        table = consistency(matrices, method=method, model_pairs=model_pairs)
    names = list(matrices)
    rows = []
    for i, da in enumerate(names):
        for db in names[i + 1 :]:
            row: dict[str, Any] = {
                "dataset_a": da,
                "dataset_b": db,
                "consistency": float(table.loc[da, db]),
                "p_value": float("nan"),
                "ci_low": float("nan"),
                "ci_high": float("nan"),
                "n_models": len(set(matrices[da].index) & set(matrices[db].index)),
                "n_permutations": n_permutations,
                "n_bootstrap": n_bootstrap,
                "note": "",
            }
            try:
                r = consistency_ci(
                    matrices[da],
                    matrices[db],
                    method=method,
                    n_permutations=n_permutations,
                    n_bootstrap=n_bootstrap,
                    level=level,
                    seed=seed,
                    model_pairs=model_pairs,
                    model_sets=model_sets,
                )
            except ConfigError as exc:
                row["note"] = str(exc)
            else:
                row.update(p_value=r.p_value, ci_low=r.ci_low, ci_high=r.ci_high)
                row["n_models"] = r.n_models
                if model_pairs is not None and model_sets is not None:
                    row["note"] = _restriction_note(
                        matrices[da],
                        matrices[db],
                        model_pairs,
                        model_sets,
                        n_permutations,
                        n_bootstrap,
                    )
                if np.isnan(r.ci_low) and n_bootstrap and not row["note"]:
                    row["note"] = "bootstrap undefined in more than half of the replicates"
            row["tested"] = bool(np.isfinite(row["p_value"]) or np.isfinite(row["ci_low"]))
            p_ok = row["p_value"] < ALPHA if n_permutations else True
            ci_ok = row["ci_low"] > 0 or row["ci_high"] < 0 if n_bootstrap else True
            row["resolved"] = bool(row["tested"] and p_ok and ci_ok)
            rows.append(row)
    return pd.DataFrame(rows)
