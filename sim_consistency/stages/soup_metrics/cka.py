"""Part ``cka``: same-block CKA of each soup to its ingredients and its base.

Reads the block×block grids ``layer_cka`` wrote (``results/layer_cka/<dataset>/cka_grids.h5``,
run with ``--pairs all`` over the soups, their ingredients and the base) and keeps each grid's
diagonal over the block names both models share: ``block_cka.csv`` (one row per soup ×
reference × block) and ``block_cka_summary.csv`` (mean/min/max over the ingredients per block).
The estimator (biased/unbiased HSIC, per-sample L2 normalisation or not) is layer_cka's, recorded
in ``summary.json``. The base is a reference only for soups of its architecture.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sim_consistency.stages.soup_metrics.inputs import (
    Needs,
    layer_cka_grid,
    layer_cka_inputs,
    layer_cka_metadata,
)
from sim_consistency.stages.soup_metrics.study import Study, write_csv


def references(study: Study) -> dict[str, list[str]]:
    """Return ``{soup_id: [ingredients…, base]}`` (the base only if of the soup's architecture)."""
    base = study.base
    out: dict[str, list[str]] = {}
    for soup_id, ingredients in study.soups.items():
        if base is not None and base not in ingredients and study.same_architecture(base, soup_id):
            out[soup_id] = [*ingredients, base]
        else:
            out[soup_id] = list(ingredients)
    return out


def _pairs(study: Study) -> list[tuple[str, str]]:
    return [(soup, ref) for soup, refs in references(study).items() for ref in refs]


def inputs(study: Study, needs: Needs) -> dict[str, Any] | None:
    """The layer_cka outputs read (None: no soup)."""
    if not study.soups:
        return None
    pairs = _pairs(study)
    return {
        "layer_cka": layer_cka_inputs(study, pairs, study.settings.datasets, needs),
        "pairs": [list(p) for p in pairs],
        "base": study.base,
    }


def estimator(study: Study) -> str:
    """layer_cka's estimator and normalisation, as its metadata records them."""
    meta = layer_cka_metadata(study, study.settings.datasets[0])
    normalised = (
        "features L2-normalised per sample"
        if meta.get("normalize")
        else "features as cached (no normalisation)"
    )
    return f"{meta.get('estimator')}, {normalised} (layer_cka grids, diagonal)"


def run(study: Study) -> None:
    """Write ``block_cka.csv`` and ``block_cka_summary.csv``."""
    rows = []
    for dataset in study.settings.datasets:
        for soup_id, refs in references(study).items():
            for ref in refs:
                grid, soup_blocks, ref_blocks = layer_cka_grid(study, dataset, soup_id, ref)
                ref_index = {name: j for j, name in enumerate(ref_blocks)}
                for i, block in enumerate(soup_blocks):
                    if block not in ref_index:
                        continue
                    rows.append(
                        {
                            "dataset": dataset,
                            "soup_id": soup_id,
                            "reference": ref,
                            "role": "base" if ref == study.base else "ingredient",
                            "block": block,
                            "block_index": i,
                            "cka": float(grid[i, ref_index[block]]),
                        }
                    )
    table = pd.DataFrame(rows)
    write_csv(table, study.out_dir / "block_cka.csv")
    if not table.empty:
        ingredient_rows = table[table["role"] == "ingredient"]
        summary = (
            ingredient_rows.groupby(["dataset", "soup_id", "block_index", "block"])["cka"]
            .agg(["mean", "min", "max"])
            .reset_index()
            .rename(columns={"mean": "cka_mean", "min": "cka_min", "max": "cka_max"})
        )
        write_csv(summary, study.out_dir / "block_cka_summary.csv")
