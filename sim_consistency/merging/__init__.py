"""Merging: state dicts in, state dict out — soups, WiSE-FT, task vectors, TIES, MonoSoup.

The math modules (:mod:`.soups`, :mod:`.wise_ft`, :mod:`.task_vectors`, :mod:`.monosoup`,
:mod:`.batchnorm`) take and return state dicts and small dataclasses: no paths, no printing, no
global RNG. :mod:`.build` turns a ``variant`` entry of the models config into weights on disk
(``models/<id>.safetensors``) through :data:`VARIANT_METHODS`.
"""

from __future__ import annotations

from sim_consistency.merging.batchnorm import (
    BN_POLICIES,
    batchnorm_buffer_names,
    copy_batchnorm_buffers,
    recompute_batchnorm,
)
from sim_consistency.merging.build import (
    VARIANT_METHODS,
    VariantBuild,
    build_variant_state_dict,
    is_materialised,
    materialise_variant,
    variant_key,
    weights_identity,
)
from sim_consistency.merging.evaluate import PreprocessedSplit, accuracy
from sim_consistency.merging.monosoup import (
    MonoSoupResult,
    effective_rank,
    mixing_coefficients,
    monosoup,
    select_rank,
)
from sim_consistency.merging.soups import greedy_soup, pruned_soup, uniform_soup
from sim_consistency.merging.state import check_finite
from sim_consistency.merging.task_vectors import task_arithmetic, task_vector, ties_merge
from sim_consistency.merging.wise_ft import wise_ft

__all__ = [
    "BN_POLICIES",
    "VARIANT_METHODS",
    "MonoSoupResult",
    "PreprocessedSplit",
    "VariantBuild",
    "accuracy",
    "batchnorm_buffer_names",
    "build_variant_state_dict",
    "check_finite",
    "copy_batchnorm_buffers",
    "effective_rank",
    "greedy_soup",
    "is_materialised",
    "materialise_variant",
    "mixing_coefficients",
    "monosoup",
    "pruned_soup",
    "recompute_batchnorm",
    "select_rank",
    "task_arithmetic",
    "task_vector",
    "ties_merge",
    "uniform_soup",
    "variant_key",
    "weights_identity",
    "wise_ft",
]
