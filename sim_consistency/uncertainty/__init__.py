"""Uncertainty: confidence intervals and tests for similarities, consistency, soups and probes.

* :mod:`.jackknife` — seeded row groups and the delete-a-group jackknife interval;
* :mod:`.linear_cka`, :mod:`.rbf_cka`, :mod:`.rsa` — exact leave-group-out values from
  per-group sufficient statistics; :mod:`.similarity` — intervals for model×model matrices
  (:func:`similarity_matrix_ci`) and block×block grids (:func:`cka_grid_ci`);
* :mod:`.mantel` — Mantel permutation test and bootstrap-over-models interval for the
  consistency of two datasets' similarity matrices;
* :mod:`.accuracy` — paired bootstrap of accuracy differences, McNemar's exact test, the
  supported / not supported / inconclusive verdict, Wilson intervals for probe accuracies.

Like the other math packages these take arrays and return numbers or small dataclasses; every
stochastic function takes a ``seed``. The similarity stages use it with ``--ci``
(:mod:`sim_consistency.stages._similarity_ci`); the intended wiring (issue 20) is:

* similarity stage with ``--ci``: ``ci = similarity_matrix_ci(features, spec, n_groups=K,
  seed=s, normalize=..., memory_budget=..., device=...)`` in place of ``similarity_matrix``;
  ``ci.point`` is the matrix it writes today (bitwise), ``ci.se`` / ``ci.ci_low`` /
  ``ci.ci_high`` go next to it (HDF5 datasets, long-CSV columns ``se``, ``ci_low``,
  ``ci_high``) and ``ci.to_metadata()`` plus ``ci.groups`` (or the seed that regenerates them
  with :func:`row_groups`) into ``metadata.json``; layer-CKA grids likewise with
  :func:`cka_grid_ci`;
* consistency stage: :func:`consistency_ci` per pair of datasets (``statistic`` is the table
  entry of today, bitwise), ``p_value``, ``ci_low``, ``ci_high`` into the tables and the
  heatmap marks, :meth:`MantelResult.to_metadata` into the metadata;
* soup metrics: :func:`paired_bootstrap_diff` of per-image correctness (soup vs best
  ingredient, soup vs the ingredients' per-image mean), :func:`mcnemar_exact` vs the best,
  :func:`verdict` of the interval for the branching statement; probes:
  :func:`wilson_interval` of the test accuracy.
"""

from sim_consistency.uncertainty.accuracy import (
    PairedDiff,
    Verdict,
    bootstrap_mean_diff,
    mcnemar_exact,
    paired_bootstrap_diff,
    verdict,
    wilson_interval,
)
from sim_consistency.uncertainty.jackknife import (
    DEFAULT_GROUPS,
    Interval,
    jackknife_interval,
    row_groups,
)
from sim_consistency.uncertainty.linear_cka import (
    LinearGroupStats,
    linear_cka_leave_out,
    linear_group_stats,
)
from sim_consistency.uncertainty.mantel import (
    ALPHA,
    MantelResult,
    bootstrap_models_ci,
    consistency_ci,
    consistency_tests,
    mantel_test,
    n_permutations_possible,
)
from sim_consistency.uncertainty.rbf_cka import rbf_cka_leave_out, rbf_leave_out_from_blocks
from sim_consistency.uncertainty.rsa import RdmRanks, rdm_ranks, rsa_leave_out, rsa_with_leave_out
from sim_consistency.uncertainty.similarity import (
    GridBlocks,
    cka_grid_ci,
    grid_blocks,
    grid_leave_out,
    grid_with_leave_out,
    leave_out_matrix,
    similarity_matrix_ci,
)

__all__ = [
    "ALPHA",
    "DEFAULT_GROUPS",
    "GridBlocks",
    "Interval",
    "LinearGroupStats",
    "MantelResult",
    "PairedDiff",
    "Verdict",
    "bootstrap_mean_diff",
    "bootstrap_models_ci",
    "consistency_ci",
    "consistency_tests",
    "mantel_test",
    "n_permutations_possible",
    "mcnemar_exact",
    "paired_bootstrap_diff",
    "verdict",
    "wilson_interval",
    "RdmRanks",
    "cka_grid_ci",
    "grid_blocks",
    "grid_with_leave_out",
    "grid_leave_out",
    "jackknife_interval",
    "leave_out_matrix",
    "linear_cka_leave_out",
    "linear_group_stats",
    "rbf_cka_leave_out",
    "rbf_leave_out_from_blocks",
    "rdm_ranks",
    "row_groups",
    "rsa_leave_out",
    "rsa_with_leave_out",
    "similarity_matrix_ci",
]
