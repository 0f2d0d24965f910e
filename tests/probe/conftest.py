"""Fixtures for probe tests: real digits features of two tiny timm models, extracted once."""

from __future__ import annotations

import json
import os

import pytest

from sim_consistency.project import ProjectLocation
from sim_consistency.stages import feature_extraction

PROBE_MODELS = {
    "vit": {"source": "timm", "model_name": "test_vit", "num_classes": 10},
    "rn": {"source": "timm", "model_name": "test_resnet", "num_classes": 0},
}


def build_probe_project(
    root, digits_root, *, max_samples: int = 200
) -> tuple[ProjectLocation, str]:
    """Extract train and test features of :data:`PROBE_MODELS` on digits under ``root``."""
    location = ProjectLocation.resolve(root).create()
    os.symlink(digits_root.wds_dataset_dir("digits"), location.wds_dataset_dir("digits"))
    config = location.root / "models.json"
    config.write_text(json.dumps(PROBE_MODELS))
    code = feature_extraction.main(
        [
            "--project_root", str(location.root),
            "--models_config", str(config),
            "--datasets", "wds/digits",
            "--splits", "train", "test",
            "--max_samples", str(max_samples),
            "--num_workers", "0",
        ]
    )  # fmt: skip
    assert code == 0
    return location, str(config)


@pytest.fixture(scope="session")
def probe_project(tmp_path_factory, digits_root) -> tuple[ProjectLocation, str]:
    """``(location, models_config)`` with cached digits features of ``vit`` and ``rn``."""
    return build_probe_project(tmp_path_factory.mktemp("probe_root") / "root", digits_root)
