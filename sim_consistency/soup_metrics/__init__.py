"""Soup metrics: soups vs ingredients, weight geometry, barriers, basins and feature purity.

Math only (tables in, tables out); the ``soup_metrics`` stage reads caches and weights and calls
these functions.
"""

from sim_consistency.soup_metrics.barriers import (
    BARRIER_DEFINITIONS,
    DEFAULT_ALPHAS,
    barrier,
    barrier_matrix,
    interpolation_alphas,
)
from sim_consistency.soup_metrics.branching import basin_summary, branching_tables
from sim_consistency.soup_metrics.improvement import id_ood_averages, soup_improvement
from sim_consistency.soup_metrics.paired import PAIRED_COLUMNS, soup_paired_tests
from sim_consistency.soup_metrics.purity import (
    abs_cosine_stats,
    orthogonality_scores,
    retention_sweep,
    select_dimensions,
    silhouette,
)
from sim_consistency.soup_metrics.weights import WeightGeometry, weight_geometry

__all__ = [
    "BARRIER_DEFINITIONS",
    "DEFAULT_ALPHAS",
    "PAIRED_COLUMNS",
    "WeightGeometry",
    "abs_cosine_stats",
    "barrier",
    "barrier_matrix",
    "basin_summary",
    "branching_tables",
    "id_ood_averages",
    "interpolation_alphas",
    "orthogonality_scores",
    "retention_sweep",
    "select_dimensions",
    "silhouette",
    "soup_improvement",
    "soup_paired_tests",
    "weight_geometry",
]
