"""Part ``monosoup``: MonoSoup's per-layer statistics of every MonoSoup / high-only / low-only
variant, read from the recipe ``build_variants`` wrote (``models/<id>.json``):
``monosoup_layers.csv`` + ``monosoup_layers_<id>.{png,pdf}``.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from sim_consistency.errors import ConfigError
from sim_consistency.merging import variant_key
from sim_consistency.soup_metrics.plots import plot_monosoup_layers, save_figure
from sim_consistency.stages.soup_metrics.inputs import Needs, require_materialised
from sim_consistency.stages.soup_metrics.study import MONOSOUP_METHODS, Study, write_csv


def _variants(study: Study) -> list[str]:
    return [
        m
        for m, s in study.user_specs.items()
        if s.variant is not None and s.variant.method in MONOSOUP_METHODS
    ]


def inputs(study: Study, needs: Needs) -> dict[str, Any] | None:
    """The variants' keys (their recipes are current when built with these keys)."""
    ids = _variants(study)
    if not ids:
        return None
    require_materialised(study, ids, needs)
    return {m: variant_key(study.specs[m], study.specs, location=study.location) for m in ids}


def run(study: Study) -> None:
    """Write the per-layer table and one figure per variant."""
    frames = []
    for model_id in _variants(study):
        spec = study.specs[model_id]
        assert spec.variant is not None
        recipe_file = study.location.model_recipe_file(model_id)
        recipe = json.loads(recipe_file.read_text())
        layers = pd.DataFrame(recipe.get("layers") or recipe.get("layer_stats") or [])
        if layers.empty:
            raise ConfigError(
                f"{recipe_file}: no per-layer statistics; rebuild the variant "
                f"(python scripts/build_variants.py --model_key {model_id} --force)."
            )
        layers.insert(0, "model_id", model_id)
        layers.insert(1, "method", spec.variant.method)
        frames.append(layers)
        options = spec.variant.options
        title = f"{model_id} ({spec.variant.method}, {options['base']} → {options['finetuned']})"
        save_figure(
            plot_monosoup_layers(layers, title=title),
            study.out_dir / f"monosoup_layers_{model_id}",
        )
    if frames:
        write_csv(pd.concat(frames, ignore_index=True), study.out_dir / "monosoup_layers.csv")
