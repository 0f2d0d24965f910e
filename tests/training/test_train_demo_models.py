"""The train_demo_models stage on a tiny real study: checkpoints, metadata, config, idempotence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sim_consistency.config import load_models_config
from sim_consistency.errors import ConfigError
from sim_consistency.models import create_model, load_state_dict_file, state_dict_sha256
from sim_consistency.stages import train_demo_models
from sim_consistency.stages.train_demo_models import TrainSettings, plan
from sim_consistency.training import (
    DEMO_STUDY,
    models_config_entries,
    study_runs,
    write_models_config,
)
from tests.training.conftest import new_project, tiny_study

REPO = Path(__file__).resolve().parents[2]
OUTPUTS = ["rn_w0_e1", "rn_w0", "rn_ft_lr0.002_s0", "rn_br_e1_s0"]


def test_every_checkpoint_has_weights_and_metadata(trained_project):
    location = trained_project.location
    for model_id in OUTPUTS:
        meta = json.loads(location.model_recipe_file(model_id).read_text())
        weights = load_state_dict_file(location.model_weights_file(model_id))
        assert meta["weights_sha256"] == state_dict_sha256(weights)
        assert meta["dataset"] == "wds/digits" and len(meta["run_key"]) == 64
        assert 0.0 <= meta["val_acc"] <= 1.0 and 0.0 <= meta["test_acc"] <= 1.0
        assert meta["curve"][-1]["heldout_acc"] == meta["val_acc"]
        assert meta["distance_to_start"]["relative"] > 0
        assert "float64" in meta["estimators"]["distance_to_start"]
    w0 = json.loads(location.model_recipe_file("rn_w0").read_text())
    assert [r["epoch"] for r in w0["curve"]] == [1, 2]
    assert w0["n_train_rows"] == round(0.2 * 1078) and "init_weights_sha256" in w0
    branched = json.loads(location.model_recipe_file("rn_br_e1_s0").read_text())
    snapshot = json.loads(location.model_recipe_file("rn_w0_e1").read_text())
    assert branched["parent_weights_sha256"] == snapshot["weights_sha256"]
    assert (
        branched["metadata"].items()
        >= {
            "role": "branched",
            "branch_epoch": 1,
            "analysis_epoch": 2,
            "parent": "rn_w0_e1",
            "seed": 0,
            "lr": 0.002,
            "run_group": "rn",
        }.items()
    )
    assert "rn_ft_lr0.002_s0" in trained_project.stdout  # summary table


def test_runs_start_from_their_parent_and_differ(trained_project):
    location = trained_project.location
    w0 = load_state_dict_file(location.model_weights_file("rn_w0"))
    ft = load_state_dict_file(location.model_weights_file("rn_ft_lr0.002_s0"))
    br = load_state_dict_file(location.model_weights_file("rn_br_e1_s0"))
    assert set(w0) == set(ft) == set(br)
    assert not torch.equal(w0["fc.weight"], ft["fc.weight"])
    assert not torch.equal(ft["fc.weight"], br["fc.weight"])
    # BatchNorm statistics were trained too (the BN-reset policies of soups need them)
    assert not torch.equal(w0["bn1.running_mean"], ft["bn1.running_mean"])


def test_models_config_loads_and_create_model_gets_the_trained_weights(trained_project):
    location = trained_project.location
    specs = load_models_config(trained_project.models_config, base_dir=location.root)
    assert list(specs) == ["rn_init", *OUTPUTS]
    spec = specs["rn_br_e1_s0"]
    assert spec.source == "checkpoint" and spec.arch == "rn_init"
    assert spec.metadata["role"] == "branched" and spec.metadata["branch_epoch"] == 1
    assert specs["rn_init"].metadata["role"] == "init"
    loaded = create_model(spec, specs, location=location)
    stored = json.loads(location.model_recipe_file("rn_br_e1_s0").read_text())
    assert loaded.weights_sha256 == stored["weights_sha256"]
    assert loaded.input_size == (3, 16, 16) and loaded.n_classes == 10
    # the init entry is the very start of W0's training
    init = create_model(specs["rn_init"], specs, location=location)
    w0 = json.loads(location.model_recipe_file("rn_w0").read_text())
    assert init.weights_sha256 == w0["init_weights_sha256"]


def test_rerun_skips_everything_and_leaves_files_alone(trained_project):
    location = trained_project.location
    settings = TrainSettings(
        project_root=location.root, study=tiny_study(), device="cpu", progress=False
    )
    assert plan(settings) == []
    before = {p: p.stat().st_mtime_ns for p in location.models.iterdir()}
    code = train_demo_models.main(
        [
            "--project_root",
            str(location.root),
            "--study",
            str(trained_project.study_file),
            "--no-progress",
        ]
    )
    assert code == 0
    assert {p: p.stat().st_mtime_ns for p in location.models.iterdir()} == before
    assert [
        i.reason
        for i in plan(TrainSettings(project_root=location.root, study=tiny_study(), force=True))
    ] == ["forced"] * 3


def test_recipe_change_retrains_the_run_and_its_children(trained_project):
    location = trained_project.location
    changed = plan(TrainSettings(project_root=location.root, study=tiny_study(pretrain_lr=0.001)))
    assert [(i.run.model_id, i.reason.split(" (")[0]) for i in changed] == [
        ("rn_w0", "rn_w0_e1: recipe changed"),
        ("rn_ft_lr0.002_s0", "parent rn_w0 is retrained"),
        ("rn_br_e1_s0", "parent rn_w0_e1 is retrained"),
    ]
    only_ft = plan(TrainSettings(project_root=location.root, study=tiny_study(finetune_epochs=2)))
    assert [i.run.model_id for i in only_ft] == ["rn_ft_lr0.002_s0", "rn_br_e1_s0"]


@pytest.mark.slow
def test_changed_recipe_is_retrained_in_place(tmp_path, digits_root, trained_project):
    """A changed recipe retrains only what it affects; changing it back reproduces bitwise."""
    location = new_project(tmp_path / "root", digits_root)
    for model_id in OUTPUTS:  # copy the session's checkpoints, then change the fine-tuning
        for path in (location.model_weights_file(model_id), location.model_recipe_file(model_id)):
            source = trained_project.location.models / path.name
            path.write_bytes(source.read_bytes())
    study = tiny_study(finetune_lrs=[0.002], seeds=[0], finetune_fraction=0.3)
    settings = TrainSettings(project_root=location.root, study=study, device="cpu", progress=False)
    items = plan(settings)
    assert [i.run.model_id for i in items] == ["rn_ft_lr0.002_s0", "rn_br_e1_s0"]
    old = json.loads(location.model_recipe_file("rn_ft_lr0.002_s0").read_text())
    for item in items:
        train_demo_models.run_item(settings, item)
    new = json.loads(location.model_recipe_file("rn_ft_lr0.002_s0").read_text())
    assert new["run_key"] != old["run_key"] and new["weights_sha256"] != old["weights_sha256"]
    assert new["n_train_rows"] == round(0.3 * 1078)
    assert plan(settings) == []
    assert not list(location.models.glob("*.partial"))
    back = TrainSettings(
        project_root=location.root, study=tiny_study(), device="cpu", progress=False
    )
    item = plan(back)[0]
    train_demo_models.run_item(back, item)
    again = json.loads(location.model_recipe_file("rn_ft_lr0.002_s0").read_text())
    assert again["weights_sha256"] == old["weights_sha256"]  # deterministic: bitwise the same
    assert again["curve"] == old["curve"]


def test_write_models_config_keeps_other_entries(tmp_path):
    path = tmp_path / "cfg.json"
    soup = {"variant": {"method": "uniform", "ingredients": ["rn_ft_lr0.002_s0"]}}
    path.write_text(json.dumps({"rn_w0": {"stale": True}, "soup": soup}))
    write_models_config(tiny_study(), path)
    written = json.loads(path.read_text())
    assert written["soup"] == soup
    assert written["rn_w0"] == models_config_entries(tiny_study())["rn_w0"]
    assert list(written)[-1] == "soup"


def test_committed_demo_config_matches_the_demo_study():
    committed = json.loads((REPO / "configs/models/demo_trained.json").read_text())
    generated = models_config_entries(DEMO_STUDY)
    assert {k: committed[k] for k in generated} == generated
    assert [r.model_id for r in study_runs(DEMO_STUDY)][:2] == ["rn_w0", "rn_ft_lr0.001_s0"]
    roles = {e["metadata"]["role"] for e in generated.values()}
    assert roles == {"init", "pretrained", "finetuned", "branched"}


def test_bad_study_file_is_a_clear_error(tmp_path, capsys):
    study = tmp_path / "study.json"
    study.write_text(json.dumps({"pretrain_epoch": 3}))
    code = train_demo_models.main(["--project_root", str(tmp_path / "r"), "--study", str(study)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{study}: unknown study field 'pretrain_epoch'; did you mean 'pretrain_epochs'?" in err
    assert not (tmp_path / "r" / "models").exists() or not list((tmp_path / "r/models").iterdir())


@pytest.mark.slow
def test_script_runs_as_a_subprocess(trained_project):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/train_demo_models.py"),
            "--project_root",
            str(trained_project.location.root),
            "--study",
            str(trained_project.study_file),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "0 run(s) trained" in result.stdout


def test_write_models_config_refuses_a_non_object(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=f"{path}: a models config is a JSON object"):
        write_models_config(tiny_study(), path)
    assert path.read_text() == "[1, 2]"
