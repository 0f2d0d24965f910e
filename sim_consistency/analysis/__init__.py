"""The Rep2Rep paper's analyses, computed from the stored similarity matrices and features.

One module per analysis; the ``analyses`` stage (:mod:`sim_consistency.stages.analyses`) reads
the inputs, calls these functions and writes tidy tables and figures under
``results/analyses/<analysis>/``:

* :mod:`.categories` — consistency by model category, per anchor model, by dataset category;
* :mod:`.clustering` — hierarchical clustering of similarity matrices (dendrogram, labels);
* :mod:`.combined_gap` — similarity vs the performance gap of combined probes;
* :mod:`.sample_size` — sensitivity of CKA to the number of samples;
* :mod:`.random_sets` — consistency distributions over random model sets.

This package file is cheap to import (the stage's ``--help`` path): the modules, which import
pandas and scipy, are imported by name.
"""

from __future__ import annotations

from pathlib import Path

from sim_consistency.project import ProjectLocation

__all__ = ["ANALYSES", "analysis_dir"]

#: The analyses, in the order the stage runs them (``--analyses`` choices).
ANALYSES: tuple[str, ...] = (
    "categories",
    "clustering",
    "combined_gap",
    "sample_size",
    "random_sets",
)


def analysis_dir(location: ProjectLocation, analysis: str) -> Path:
    """Return ``results/analyses/<analysis>/``, the folder of one analysis's outputs."""
    return location.results / "analyses" / analysis
