"""Representation similarity: CKA, RSA, mutual k-NN, block grids and cross-dataset consistency.

The math functions take (n, d) arrays (numpy or torch) and return numbers; they accumulate in
float64 and stream over rows in chunks. Stages read the feature cache and call them.
"""

from sim_consistency.similarity._arrays import (
    BandwidthTooSmallWarning,
    DegenerateRepresentationWarning,
    l2_normalize,
)
from sim_consistency.similarity.cka import (
    LinearStats,
    RbfStats,
    accumulation_groups,
    choose_space,
    cka,
    linear_cka_from_stats,
    linear_stats,
    median_sq_distance,
    rbf_cka_from_stats,
    rbf_stats,
)
from sim_consistency.similarity.consistency import (
    consistency,
    consistency_summary,
    model_set_members,
    model_set_pairs,
)
from sim_consistency.similarity.grid import block_stats, cka_grid, cka_grid_from_stats
from sim_consistency.similarity.knn import knn_table, mutual_knn
from sim_consistency.similarity.matrix import (
    SIMILARITY_METRICS,
    describe_estimator,
    similarity_matrix,
)
from sim_consistency.similarity.rsa import rdm_upper, rsa
from sim_consistency.similarity.slugs import legacy_metric_slugs, metric_slug

__all__ = [
    "SIMILARITY_METRICS",
    "BandwidthTooSmallWarning",
    "DegenerateRepresentationWarning",
    "LinearStats",
    "RbfStats",
    "block_stats",
    "accumulation_groups",
    "choose_space",
    "cka",
    "cka_grid",
    "cka_grid_from_stats",
    "consistency",
    "consistency_summary",
    "describe_estimator",
    "knn_table",
    "l2_normalize",
    "legacy_metric_slugs",
    "linear_cka_from_stats",
    "linear_stats",
    "median_sq_distance",
    "metric_slug",
    "model_set_members",
    "model_set_pairs",
    "mutual_knn",
    "rbf_cka_from_stats",
    "rbf_stats",
    "rdm_upper",
    "rsa",
    "similarity_matrix",
]
