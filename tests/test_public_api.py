"""Every public name DESIGN.md promises (for the stages that exist) imports and is documented."""

from __future__ import annotations

import importlib
import inspect

import pytest

PUBLIC = {
    "sim_consistency.config": ["load_models_config", "ModelSpec", "VariantSpec"],
    "sim_consistency.data": [
        "load_dataset",
        "read_dataset_list",
        "build_digits",
        "stratified_subset",
        "load_or_create_subset",
        "collate_samples",
        "WdsDataset",
        "ImageFolderDataset",
        "check_dataset",
        "DatasetCheck",
    ],
    "sim_consistency.models": [
        "create_model",
        "LoadedModel",
        "BLOCK_FAMILIES",
        "MODEL_SOURCES",
        "find_block_names",
        "describe_blocks",
        "load_state_dict_file",
        "state_dict_sha256",
    ],
    "sim_consistency.features": [
        "open_cache",
        "read_cache_attrs",
        "FeatureCacheWriter",
        "BlockExtractor",
        "load_aligned_blocks",
        "content_key",
    ],
    "sim_consistency.errors": [
        "SimcError",
        "ConfigError",
        "DataError",
        "MissingInputError",
        "CacheError",
        "WeightsNotFoundError",
        "OfflineError",
    ],
    "sim_consistency.io": ["atomic_output"],
    "sim_consistency.similarity": ["cka", "cka_grid", "rsa", "mutual_knn", "consistency"],
    "sim_consistency.merging": [
        "uniform_soup",
        "greedy_soup",
        "pruned_soup",
        "wise_ft",
        "task_arithmetic",
        "ties_merge",
        "monosoup",
    ],
    "sim_consistency.probe": [
        "linear_probe",
        "head_accuracy",
        "read_predictions",
        "read_probe_weights",
        "combine_features",
        "shipped_class_map",
    ],
    "sim_consistency.soup_metrics": [
        "weight_geometry",
        "barrier",
        "barrier_matrix",
        "branching_tables",
        "basin_summary",
        "soup_improvement",
        "silhouette",
        "abs_cosine_stats",
        "retention_sweep",
    ],
    "sim_consistency.uncertainty": [
        "similarity_matrix_ci",
        "cka_grid_ci",
        "row_groups",
        "jackknife_interval",
        "Interval",
        "consistency_ci",
        "mantel_test",
        "bootstrap_models_ci",
        "paired_bootstrap_diff",
        "mcnemar_exact",
        "verdict",
        "wilson_interval",
    ],
    "sim_consistency.launch": ["launch", "LaunchOptions", "load_slurm_config"],
    "sim_consistency.project": ["ProjectLocation", "resolve_project_root"],
    "sim_consistency.progress": ["progress_bar", "log_handler", "PlainProgress"],
    "sim_consistency.cli": ["main", "COMMANDS"],
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_public_names_import_and_have_docstrings(module_name):
    module = importlib.import_module(module_name)
    assert module.__doc__, f"{module_name} has no module docstring"
    exported = set(getattr(module, "__all__", []))
    for name in PUBLIC[module_name]:
        obj = getattr(module, name)
        assert name in exported, f"{module_name}.{name} missing from __all__"
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert inspect.getdoc(obj), f"{module_name}.{name} has no docstring"
