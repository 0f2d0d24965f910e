"""Linear probes on cached features (Rep2Rep protocol and a fast exact solver) and head metrics."""

from sim_consistency.probe.head import (
    CLASS_MASK_FILE,
    cache_head_accuracy,
    head_accuracy,
    read_class_mask,
)
from sim_consistency.probe.linear_probe import (
    PROTOCOLS,
    REP2REP_LRS,
    WEIGHT_DECAY_GRID,
    classification_metrics,
    coarse_to_fine_search,
    fewshot_indices,
    linear_probe,
    linear_probe_blocks,
    validation_split,
)
from sim_consistency.probe.solvers import (
    LogRegFit,
    Spectrum,
    feature_spectrum,
    fit_logreg,
    fit_rep2rep,
    l2_from_sklearn_C,
    sklearn_C,
)

__all__ = [
    "CLASS_MASK_FILE",
    "LogRegFit",
    "PROTOCOLS",
    "REP2REP_LRS",
    "Spectrum",
    "WEIGHT_DECAY_GRID",
    "cache_head_accuracy",
    "classification_metrics",
    "coarse_to_fine_search",
    "feature_spectrum",
    "fewshot_indices",
    "fit_logreg",
    "fit_rep2rep",
    "head_accuracy",
    "l2_from_sklearn_C",
    "linear_probe",
    "linear_probe_blocks",
    "read_class_mask",
    "sklearn_C",
    "validation_split",
]
