"""Fixtures for the similarity tests: seeded random representations and cached features."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageOps

from sim_consistency.data import load_dataset
from sim_consistency.project import ProjectLocation
from sim_consistency.stages import feature_extraction


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def pair(rng) -> tuple[np.ndarray, np.ndarray]:
    """Two related representations of 80 samples: Y is a noisy nonlinear map of X."""
    X = rng.normal(size=(80, 12))
    Y = np.tanh(X @ rng.normal(size=(12, 9))) + 0.3 * rng.normal(size=(80, 9))
    return X, Y


# -- stage fixtures: real caches of tiny models on two real datasets, extracted once ---------

#: Tiny real models with the metadata the consistency restriction groups by. ``vit_a`` and
#: ``vit_b`` share an architecture (same block names), as a pretrained/finetuned pair would.
STAGE_MODELS: dict[str, dict] = {
    "vit_a": {
        "source": "timm",
        "model_name": "test_vit",
        "num_classes": 10,
        "objective": "supervised",
        "architecture_class": "transformer",
    },
    "vit_b": {
        "source": "timm",
        "model_name": "test_vit",
        "num_classes": 0,
        "objective": "supervised",
        "architecture_class": "transformer",
    },
    "cnx": {
        "source": "timm",
        "model_name": "test_convnext",
        "num_classes": 10,
        "objective": "supervised",
        "architecture_class": "cnn",
    },
    "clip": {
        "source": "open_clip",
        "model_name": "simc-tiny-vit",
        "pooling": "mean_patch",
        "objective": "clip",
        "architecture_class": "transformer",
    },
}
N_ROWS = 32
INVERTED = "digits_inverted"


@dataclass(frozen=True)
class SimilarityProject:
    """A project with caches of :data:`STAGE_MODELS` on ``wds/digits`` and an image folder."""

    location: ProjectLocation
    models_config: Path
    datasets: tuple[str, str]

    def copy(self, target: Path) -> SimilarityProject:
        """Return a private copy (features and datasets) that a test may modify."""
        shutil.copytree(self.location.root, target, symlinks=True)
        return SimilarityProject(ProjectLocation(target), self.models_config, self.datasets)


def _write_inverted_digits(location: ProjectLocation, target: Path) -> None:
    """Write the digits test images, inverted, as an image folder (a second real dataset)."""
    rows = load_dataset("wds/digits", "test", location=location, max_samples=N_ROWS)
    for sample in rows:
        folder = target / "test" / rows.classnames[sample.label]
        folder.mkdir(parents=True, exist_ok=True)
        ImageOps.invert(sample.image.convert("RGB")).save(folder / f"{sample.key}.png")


@pytest.fixture(scope="session")
def similarity_project(
    tmp_path_factory: pytest.TempPathFactory, digits_root, tiny_open_clip
) -> SimilarityProject:
    """Extract the test split of both datasets once per session (read-only: copy to modify)."""
    base = tmp_path_factory.mktemp("similarity")
    location = ProjectLocation.resolve(base / "root").create()
    os.symlink(digits_root.wds_dataset_dir("digits"), location.wds_dataset_dir("digits"))
    _write_inverted_digits(location, base / INVERTED)
    datasets = ("wds/digits", f"imagefolder:{base / INVERTED}")
    config = base / "models.json"
    config.write_text(json.dumps(STAGE_MODELS))
    args = ["--project_root", str(location.root), "--models_config", str(config)]
    code = feature_extraction.main(
        [
            *args,
            "--datasets",
            *datasets,
            "--splits",
            "test",
            "--max_samples",
            str(N_ROWS),
            "--batch_size",
            "20",
            "--num_workers",
            "0",
            "--dtype",
            "float32",
        ]
    )
    assert code == 0
    return SimilarityProject(location, config, datasets)
