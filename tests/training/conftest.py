"""Fixtures for the training tests: one tiny real study trained once per session."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from sim_consistency.project import ProjectLocation
from sim_consistency.stages import train_demo_models
from sim_consistency.training import DemoStudy

#: A study small enough for the test suite: test_resnet (BatchNorm) at 16 px, W0 for 2 epochs on
#: 20 % of the train rows with a snapshot after epoch 1, one fine-tuned and one branched run of
#: 1 epoch on 40 % of the rows.
TINY_STUDY: dict = {
    "groups": {"rn": {"model_name": "test_resnet", "img_size": 16}},
    "pretrain_fraction": 0.2,
    "pretrain_epochs": 2,
    "pretrain_lr": 0.003,
    "branch_epochs": [1],
    "finetune_epochs": 1,
    "finetune_fraction": 0.4,
    "finetune_lrs": [0.002],
    "seeds": [0],
}


def tiny_study(**changes) -> DemoStudy:
    """The tiny study as a :class:`DemoStudy`, with ``changes`` applied."""
    values = {**TINY_STUDY, **changes}
    return DemoStudy(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass(frozen=True)
class TrainedProject:
    """A project root where the tiny study was trained by the stage, and its files."""

    location: ProjectLocation
    study_file: Path
    models_config: Path
    stdout: str


def new_project(root: Path, digits_root: ProjectLocation) -> ProjectLocation:
    """A fresh project root whose ``wds/digits`` links to the session-built shards."""
    location = ProjectLocation.resolve(root).create()
    os.symlink(digits_root.wds_dataset_dir("digits"), location.wds_dataset_dir("digits"))
    return location


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory, digits_root) -> TrainedProject:
    """Run ``train_demo_models.main`` once on the tiny study (read-only for tests)."""
    import contextlib
    import io

    folder = tmp_path_factory.mktemp("trained")
    location = new_project(folder / "root", digits_root)
    study_file = folder / "study.json"
    study_file.write_text(json.dumps(TINY_STUDY))
    config = folder / "demo_trained.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = train_demo_models.main(
            [
                "--project_root",
                str(location.root),
                "--study",
                str(study_file),
                "--write_models_config",
                str(config),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
    assert code == 0, out.getvalue()
    return TrainedProject(location, study_file, config, out.getvalue())
