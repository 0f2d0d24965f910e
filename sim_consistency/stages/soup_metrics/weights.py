"""Part ``weights``: weight geometry of each soup, its ingredients and the base.

Reads the checkpoints and the materialised variants (``models/<id>.safetensors``, written by
``build_variants``) and writes ``weight_pairs.csv``, ``weight_layers.csv`` and
``weight_norms.csv`` (:func:`~sim_consistency.soup_metrics.weight_geometry`; task vectors
relative to the base, for soups of the base's architecture). Also the weight loader of the
branching and purity parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from sim_consistency.errors import ConfigError
from sim_consistency.models import create_model
from sim_consistency.soup_metrics import weight_geometry
from sim_consistency.stages.soup_metrics.inputs import (
    Needs,
    require_materialised,
    weight_identities,
)
from sim_consistency.stages.soup_metrics.study import Study, write_csv

ESTIMATOR = (
    "L2 distance / cosine over floating-point tensors, BatchNorm running statistics excluded; "
    "task vectors relative to the base"
)


def weight_sources(study: Study, model_ids: Sequence[str]) -> dict[str, Any]:
    """Materialised variants stream from their safetensors; other models are built on the CPU."""
    sources: dict[str, Any] = {}
    for model_id in model_ids:
        spec = study.specs[model_id]
        if spec.is_variant:
            sources[model_id] = study.location.model_weights_file(model_id)
        else:
            loaded = create_model(spec, study.specs, device="cpu", location=study.location)
            sources[model_id] = {k: v.detach() for k, v in loaded.model.state_dict().items()}
    return sources


def named_weight(study: Study, model_id: str, name: str) -> np.ndarray:
    """Return tensor ``name`` of a model as a float64 (rows, -1) matrix."""
    source = weight_sources(study, [model_id])[model_id]
    if not isinstance(source, dict):
        from safetensors import safe_open

        with safe_open(str(source), framework="pt") as handle:
            names = list(handle.keys())
            tensor = handle.get_tensor(name) if name in names else None
    else:
        names = list(source)
        tensor = source.get(name)
    if tensor is None or tensor.ndim < 2:
        raise ConfigError(
            f"--purity_weight {name!r}: not a ≥2-D tensor of model {model_id!r}. "
            f"Matrix tensors: {', '.join(n for n in names if n.endswith('weight'))[:400]}…"
        )
    return tensor.detach().to(torch.float64).reshape(tensor.shape[0], -1).numpy()


def _groups(study: Study) -> dict[str, list[str]]:
    """``{soup_id: models compared}``: ingredients, the soup, the base of its architecture."""
    base = study.base
    out = {}
    for soup_id, ingredients in study.soups.items():
        soup_base = base if base and study.same_architecture(base, soup_id) else None
        out[soup_id] = list(
            dict.fromkeys([*ingredients, soup_id, *([soup_base] if soup_base else [])])
        )
    return out


def inputs(study: Study, needs: Needs) -> dict[str, Any] | None:
    """The weights read, by content (None: no soup)."""
    if not study.soups:
        return None
    groups = _groups(study)
    models = [m for ids in groups.values() for m in ids]
    require_materialised(study, models, needs)
    return {"groups": groups, "base": study.base, "weights": weight_identities(study, models)}


def run(study: Study) -> None:
    """Write the three weight tables."""
    base = study.base
    frames: dict[str, list[pd.DataFrame]] = {"pairs": [], "layers": [], "norms": []}
    for soup_id, model_ids in _groups(study).items():
        soup_base = base if base in model_ids else None
        geometry = weight_geometry(weight_sources(study, model_ids), base=soup_base)
        for name in frames:
            frames[name].append(getattr(geometry, name).assign(soup_id=soup_id, base=soup_base))
    for name, parts in frames.items():
        write_csv(pd.concat(parts, ignore_index=True), study.out_dir / f"weight_{name}.csv")
