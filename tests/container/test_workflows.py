"""GitHub workflows: schema-valid, and they do what the release process promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.container.test_definition import tomllib

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"


def _load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def _run_lines(workflow: dict) -> str:
    return "\n".join(
        step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]
    )


def test_workflows_pass_the_github_workflow_schema():
    module = pytest.importorskip("check_jsonschema", reason="check-jsonschema not installed")
    site = str(Path(module.__file__).resolve().parents[1])
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert {Path(f).name for f in files} == {"container.yml", "tests.yml"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([site, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            *files,
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_container_workflow_builds_and_pushes_on_version_tags():
    workflow = _load("container.yml")
    assert workflow["on"] == {"push": {"tags": ["v*.*.*"]}}
    assert workflow["permissions"]["packages"] == "write"
    run = _run_lines(workflow)
    assert "apptainer build" in run and "container/sim_consistency.def" in run
    assert "secrets.GITHUB_TOKEN" in run and "registry login" in run and "oras://ghcr.io" in run
    assert 'apptainer push sim_consistency.sif "${image}:${GITHUB_REF_NAME}-sif"' in run
    assert 'apptainer push sim_consistency.sif "${image}:latest-sif"' in run
    assert 'image="oras://ghcr.io/${GITHUB_REPOSITORY,,}"' in run


def test_tests_workflow_runs_make_test_on_pushes():
    workflow = _load("tests.yml")
    assert "push" in workflow["on"]
    run = _run_lines(workflow)
    assert "make test" in run
    assert ".ci/slurm_up.sh" in run


def test_tests_workflow_covers_the_python_range_lint_and_types():
    workflow = _load("tests.yml")
    jobs = workflow["jobs"]
    # The declared minimum Python and the image's Python (its base image's tag).
    minimum = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    image = re.search(
        r"^From: python:(\d+\.\d+)", (REPO / "container" / "sim_consistency.def").read_text(), re.M
    )
    assert image is not None
    versions = jobs["test"]["strategy"]["matrix"]["python-version"]
    assert set(versions) == {minimum.removeprefix(">="), image.group(1)}
    assert jobs["test"]["env"]["UV_PYTHON"] == "${{ matrix.python-version }}"
    assert "make test" in _run_lines({"jobs": {"test": jobs["test"]}})
    lint = _run_lines({"jobs": {"lint": jobs["lint"]}})
    assert "ruff check ." in lint and "ruff format --check ." in lint
    assert "make typecheck" in _run_lines({"jobs": {"mypy": jobs["mypy"]}})
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^typecheck: sync\n\t\$\(UV\) run --frozen mypy$", makefile, re.M)
