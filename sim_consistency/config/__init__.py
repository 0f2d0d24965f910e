"""Configs as validated, frozen specs: JSON enters the program only through these loaders."""

from sim_consistency.config.models import (
    POOLINGS,
    ModelSpec,
    VariantSpec,
    dependency_order,
    load_models_config,
    parse_models_config,
    select_models,
)

__all__ = [
    "POOLINGS",
    "ModelSpec",
    "VariantSpec",
    "dependency_order",
    "load_models_config",
    "parse_models_config",
    "select_models",
]
