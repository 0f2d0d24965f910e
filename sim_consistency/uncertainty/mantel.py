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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
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


def _check(A: Any, B: Any, method: str) -> tuple[np.ndarray, np.ndarray]:
    if method not in ("pearson", "spearman"):
        raise ConfigError(f"mantel: method must be 'pearson' or 'spearman' (got {method!r}).")
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape != B.shape:
        raise ConfigError(
            f"mantel: need two square matrices over the same models (got {A.shape} and {B.shape})."
        )
    m = A.shape[0]
    if m * (m - 1) // 2 < MIN_PAIRS:
        raise ConfigError(f"mantel: {m} models give fewer than {MIN_PAIRS} pairs.")
    iu = np.triu_indices(m, 1)
    for name, X in (("A", A), ("B", B)):
        bad = ~np.isfinite(X[iu])
        if bad.any():
            i, j = iu[0][bad][0], iu[1][bad][0]
            raise ConfigError(
                f"mantel: matrix {name} has {int(bad.sum())} NaN/inf pair(s), the first at "
                f"models ({i}, {j}); permutation and bootstrap need every pair defined."
            )
    return A, B


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
) -> tuple[float, float]:
    """Return ``(statistic, p_value)`` of the Mantel test of two (M, M) similarity matrices.

    Args:
        A, B: symmetric similarity matrices over the same M models in the same order.
        method: correlation of the upper triangles.
        n_permutations: model permutations drawn (seeded).
        alternative: ``"greater"`` (one-sided, positive association) or ``"two-sided"``.
        seed: seed of the permutations.
        chunk: permutations evaluated per vectorised step.
    """
    A, B = _check(A, B, method)
    if alternative not in ("greater", "two-sided"):
        raise ConfigError(
            f"mantel: alternative must be greater or two-sided (got {alternative!r})."
        )
    if not (isinstance(n_permutations, int) and n_permutations >= 1):
        raise ConfigError(f"mantel: n_permutations must be >= 1 (got {n_permutations!r}).")
    m = A.shape[0]
    iu, ju = np.triu_indices(m, 1)
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
        p = rng.permuted(np.tile(np.arange(m), (min(chunk, n_permutations - start), 1)), axis=1)
        perm = _standardise(B[p[:, iu], p[:, ju]]) @ zx
        if alternative == "greater":
            extreme += int((perm >= observed - tol).sum())
        else:
            extreme += int((np.abs(perm) >= abs(observed) - tol).sum())
    return stat, (1 + extreme) / (1 + n_permutations)


def bootstrap_models_ci(
    A: Any,
    B: Any,
    *,
    method: Literal["pearson", "spearman"] = "pearson",
    n_bootstrap: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Return the percentile bootstrap-over-models interval of the matrices' correlation.

    Resamples models with replacement; pairs of a model with its own copy are dropped (see the
    module docstring). Replicates whose correlation is undefined (fewer than 3 pairs of
    distinct models, constant values) are skipped; the interval is NaN when more than half are.
    """
    A, B = _check(A, B, method)
    if not 0 < level < 1:
        raise ConfigError(f"bootstrap: level must be in (0, 1) (got {level!r}).")
    m = A.shape[0]
    iu, ju = np.triu_indices(m, 1)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, m, size=(n_bootstrap, m))
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
) -> MantelResult:
    """Return the consistency of two datasets' matrices with Mantel p-value and bootstrap CI.

    The models both matrices hold are aligned by id (sorted, as ``consistency`` does), so
    ``statistic`` is bitwise ``consistency({da: matrix_a, db: matrix_b}, method).loc[da, db]``.

    Args:
        matrix_a, matrix_b: (M, M) DataFrames indexed by model id on both axes.
        method: ``"pearson"`` or ``"spearman"``.
        n_permutations: Mantel permutations (0: no test, p-value NaN).
        n_bootstrap: bootstrap replicates (0: no interval).
        level: nominal coverage of the interval.
        alternative: of the Mantel test.
        seed: seed of both procedures (recorded).
    """
    _check_matrix("matrix_a", matrix_a)
    _check_matrix("matrix_b", matrix_b)
    common = sorted(m for m in matrix_a.index if m in set(matrix_b.index))
    A = matrix_a.loc[common, common].to_numpy(dtype=np.float64)
    B = matrix_b.loc[common, common].to_numpy(dtype=np.float64)
    pairs = [(a, b) for i, a in enumerate(common) for b in common[i + 1 :]]
    stat = _point(pair_values(matrix_a, pairs), pair_values(matrix_b, pairs), method)
    p = float("nan")
    if n_permutations:
        _, p = mantel_test(
            A, B, method=method, n_permutations=n_permutations, alternative=alternative, seed=seed
        )
    lo = hi = float("nan")
    if n_bootstrap:
        lo, hi = bootstrap_models_ci(
            A, B, method=method, n_bootstrap=n_bootstrap, level=level, seed=seed
        )
    return MantelResult(
        stat, method, p, n_permutations, alternative, lo, hi, level, n_bootstrap, seed, len(common)
    )


#: A consistency value counts as resolved when its Mantel p-value is below this and its
#: bootstrap interval excludes 0 (heatmap cells that fail either are hatched).
ALPHA = 0.05


def consistency_tests(
    matrices: Mapping[str, pd.DataFrame],
    method: Literal["pearson", "spearman"] = "pearson",
    *,
    model_pairs: Sequence[tuple[str, str]] | None = None,
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
    reason in ``note``: a model-pair restriction (permuting models of a bipartite pair set is not
    implemented), NaN similarities, fewer than 3 shared models. The seed is the same for
    every pair of datasets.
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
            if model_pairs is not None:
                row["note"] = "not computed under a model-pair restriction"
            else:
                try:
                    r = consistency_ci(
                        matrices[da],
                        matrices[db],
                        method=method,
                        n_permutations=n_permutations,
                        n_bootstrap=n_bootstrap,
                        level=level,
                        seed=seed,
                    )
                except ConfigError as exc:
                    row["note"] = str(exc)
                else:
                    row.update(p_value=r.p_value, ci_low=r.ci_low, ci_high=r.ci_high)
                    if np.isnan(r.ci_low) and n_bootstrap:
                        row["note"] = "bootstrap undefined in more than half of the replicates"
            row["tested"] = bool(np.isfinite(row["p_value"]) or np.isfinite(row["ci_low"]))
            p_ok = row["p_value"] < ALPHA if n_permutations else True
            ci_ok = row["ci_low"] > 0 or row["ci_high"] < 0 if n_bootstrap else True
            row["resolved"] = bool(row["tested"] and p_ok and ci_ok)
            rows.append(row)
    return pd.DataFrame(rows)
