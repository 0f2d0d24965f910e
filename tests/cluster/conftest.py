"""Fixtures for launcher tests: the real local SLURM cluster, and project roots with data."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sim_consistency.data.digits.derived import build_digits_rotated
from sim_consistency.project import ProjectLocation

REPO = Path(__file__).resolve().parents[2]
SLURM_UP = REPO / ".ci" / "slurm_up.sh"


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Start (or find running) the single-node SLURM cluster of ``.ci/slurm_up.sh``.

    Skips, saying why, only where SLURM cannot be installed or started: not root, no apt, or
    the script fails (its output tail is in the skip reason).
    """
    if subprocess.run(["bash", str(SLURM_UP), "--check"], capture_output=True).returncode == 0:
        return
    if os.geteuid() != 0:
        pytest.skip("SLURM test cluster not running and .ci/slurm_up.sh needs root to start it")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("SLURM is not installed and cannot be (no apt-get on this machine)")
    done = subprocess.run(
        ["bash", str(SLURM_UP)], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-8:])
        pytest.skip(f".ci/slurm_up.sh could not install/start SLURM:\n{tail}")


@pytest.fixture(scope="session")
def two_datasets_root(tmp_path_factory, digits_root) -> ProjectLocation:
    """A data root with ``wds/digits`` (shared shards) and ``wds/digits_rotated`` built once."""
    location = ProjectLocation.resolve(tmp_path_factory.mktemp("two_datasets")).create()
    os.symlink(digits_root.wds_dataset_dir("digits"), location.wds_dataset_dir("digits"))
    build_digits_rotated(location)
    return location


@pytest.fixture(scope="session")
def new_root(tmp_path_factory, two_datasets_root):
    """Make a fresh project root sharing the two datasets: ``new_root("name")``."""

    def make(name: str) -> ProjectLocation:
        location = ProjectLocation.resolve(tmp_path_factory.mktemp(name) / "root").create()
        for dataset in ("digits", "digits_rotated"):
            os.symlink(
                two_datasets_root.wds_dataset_dir(dataset), location.wds_dataset_dir(dataset)
            )
        return location

    return make
