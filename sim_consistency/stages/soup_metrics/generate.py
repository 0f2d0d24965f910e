"""The ``generate`` step of ``build_variants``: flags and the generated models config.

``build_variants --generate OUT --interpolate A:B --barrier_models … --n_alphas N
[--bn_policy …]`` writes the models config plus the soup study's generated variants
(:mod:`sim_consistency.merging.generate`: interpolation points, branching soups) to ``OUT``;
``build_variants`` then builds ``OUT``'s variants and the later stages take ``--models_config
OUT``. The same ``--interpolate`` / ``--barrier_models`` / ``--n_alphas`` name the barriers
``soup_metrics`` reads.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sim_consistency.config import load_models_config
from sim_consistency.merging.generate import SoupStudy, generated_entries, write_generated_config
from sim_consistency.project import ProjectLocation

__all__ = ["generate_config"]

log = logging.getLogger("sim_consistency.build_variants")


def generate_config(
    models_config: Path, out: Path, study: SoupStudy, *, project_root: str | Path | None = None
) -> Path:
    """Write ``models_config`` plus ``study``'s generated variants to ``out``; return its path.

    The whole generate step; ``build_variants`` runs it while validating its settings.
    """
    location = ProjectLocation.resolve(project_root)
    specs = load_models_config(models_config, base_dir=location.root)
    entries = generated_entries(specs, study)
    written = write_generated_config(Path(models_config), entries, Path(out))
    log.info("%s: models config + %d generated variant(s)", written, len(entries))
    return written.resolve()
