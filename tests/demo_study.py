"""The quick demo study shared by the demo, notebook and README tests (one run per session).

A reduced training study (one ResNet group, 2+1 epochs) and a handful of variants, run through
``scripts/demo.py``'s stage with ``--quick``; loaded as a pytest plugin by ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import os

import pytest

from sim_consistency.project import ProjectLocation
from sim_consistency.stages import demo, train_demo_models

QUICK_STUDY = {
    "groups": {"rn": {"model_name": "test_resnet", "img_size": 16}},
    "pretrain_epochs": 2,
    "pretrain_fraction": 0.3,
    "branch_epochs": [1],
    "finetune_epochs": 1,
    "finetune_fraction": 0.3,
    "finetune_lrs": [0.001],
    "seeds": [0, 1],
}


def _variants() -> dict:
    ft = ["rn_ft_lr0.001_s0", "rn_ft_lr0.001_s1"]
    entries = {
        "rn_soup_uniform": {"variant": {"method": "uniform", "ingredients": ft}},
        "rn_ties": {"variant": {"method": "ties", "base": "rn_w0", "finetuned": ft}},
    }
    for method in ("monosoup", "highonly", "lowonly"):
        entries[f"rn_{method}_vetterli"] = {
            "variant": {"method": method, "base": "rn_w0", "finetuned": ft[0]}
        }
    return entries


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory, digits_root):
    tmp = tmp_path_factory.mktemp("demo")
    location = ProjectLocation.resolve(tmp / "root").create()
    os.symlink(digits_root.wds_dataset_dir("digits"), location.wds_dataset_dir("digits"))
    study = tmp / "study.json"
    study.write_text(json.dumps(QUICK_STUDY))
    config = tmp / "models.json"
    root = ["--project_root", str(location.root)]
    assert (
        train_demo_models.main(
            [*root, "--study", str(study), "--write_models_config", str(config), "--no-progress"]
        )
        == 0
    )
    config.write_text(json.dumps({**json.loads(config.read_text()), **_variants()}))
    argv = [*root, "--models_config", str(config), "--study", str(study), "--quick"]
    assert demo.main(argv) == 0
    return location, argv
