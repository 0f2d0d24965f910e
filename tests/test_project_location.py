"""project_location.py: root precedence, layout, creation, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import project_location
from sim_consistency.project import ProjectLocation, dataset_slug, resolve_project_root

REPO = Path(__file__).resolve().parents[1]


def test_flag_beats_env_beats_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SIMC_ROOT", raising=False)
    assert resolve_project_root() == REPO / "project_root"  # the checkout's, wherever we start
    monkeypatch.setenv("SIMC_ROOT", str(tmp_path / "from_env"))
    assert resolve_project_root() == tmp_path / "from_env"
    assert resolve_project_root(tmp_path / "from_flag") == tmp_path / "from_flag"
    assert resolve_project_root("relative") == tmp_path / "relative"


@pytest.mark.parametrize("start", ["notebooks", "scripts", "."])
def test_default_root_does_not_depend_on_the_start_folder(start, monkeypatch):
    """Jupyter starts a notebook in notebooks/: it must find the stages' root, not its own."""
    monkeypatch.chdir(REPO / start)
    monkeypatch.delenv("SIMC_ROOT", raising=False)
    assert resolve_project_root() == REPO / "project_root"
    assert project_location.ProjectLocation.resolve().root == REPO / "project_root"


def test_without_a_checkout_the_default_is_the_current_folder(tmp_path, monkeypatch, caplog):
    import sim_consistency.project as project

    monkeypatch.setattr(project, "_CHECKOUT", tmp_path / "site-packages")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SIMC_ROOT", raising=False)
    assert resolve_project_root() == tmp_path / "project_root"
    assert f"project root: {tmp_path / 'project_root'}" in caplog.text
    assert "--project_root or set $SIMC_ROOT" in caplog.text


def test_layout_matches_design(tmp_path):
    loc = ProjectLocation.resolve(tmp_path)
    assert loc.wds_dataset_dir("vtab/cifar10") == tmp_path / "datasets/wds/wds_vtab-cifar10"
    assert loc.subset_indices_file("wds/digits", "test") == (
        tmp_path / "datasets/subsets/wds_digits/subset_indices_test.json"
    )
    assert loc.feature_file("wds/vtab/cifar10", "train", "vit") == (
        tmp_path / "features/wds_vtab_cifar10/train/vit.h5"
    )
    assert loc.similarity_dir("wds/digits", "cka_kernel_linear_unbiased") == (
        tmp_path / "model_similarities/wds_digits/cka_kernel_linear_unbiased"
    )
    assert loc.model_weights_file("soup") == tmp_path / "models/soup.safetensors"
    assert dataset_slug("wds/vtab/cifar10") == "wds_vtab_cifar10"


def test_create_makes_every_folder(tmp_path):
    loc = project_location.project_location(tmp_path / "root")
    for name, path in loc.folders().items():
        assert path.is_dir(), name
    for sub in (
        "datasets/wds",
        "datasets/subsets",
        "models",
        "features",
        "model_similarities",
        "results/layer_cka",
        "results/linear_probe",
        "results/soup_metrics",
        "results/consistency",
        "results/aggregated",
    ):
        assert (tmp_path / "root" / sub).is_dir(), sub


@pytest.mark.parametrize("use_env", [False, True])
def test_cli_prints_and_creates(tmp_path, use_env):
    root = tmp_path / "r"
    args = [sys.executable, str(REPO / "project_location.py")]
    env = None
    if use_env:
        import os

        env = {**os.environ, "SIMC_ROOT": str(root)}
    else:
        args += ["--project_root", str(root)]
    out = subprocess.run(args, check=True, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert f"features            {root / 'features'}" in out.stdout
    assert (root / "model_similarities").is_dir()
