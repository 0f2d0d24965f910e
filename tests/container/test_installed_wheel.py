"""The package works installed like the image installs it: a built wheel, non-editable, no checkout.

Builds the wheel (``uv build``), installs it with the locked dependencies into a fresh virtual
environment outside the repository (``uv export --frozen --no-dev`` + ``uv pip install``; uv's
package cache makes this a hard-link copy, no download), copies ``scripts/`` where the image puts
them, and from an unrelated directory runs the definition's ``%test`` (read from
``container/sim_consistency.def``), a stage's ``--help``, ``--slurm_config debug`` resolution and
the demo's config lookup. A repository-layout path in the library fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.container.test_definition import REPO, sections

pytestmark = pytest.mark.slow

#: Where the image puts the project (``%files``); replaced by a temporary folder here.
IMAGE_PROJECT = "/opt/sim_consistency"


def _uv() -> str:
    found = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    assert Path(found).is_file(), "uv is neither on PATH nor in .tools/ (make sync installs it)"
    return found


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | dict[str, str]]:
    """A venv with the built wheel installed non-editable, the image's folders, a clean cwd."""
    base = tmp_path_factory.mktemp("installed")
    uv = _uv()
    # No bytecode pass over all packages (the imports below compile what they use) and no
    # interpreter downloads; the repository's .venv must not leak in.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env |= {"UV_COMPILE_BYTECODE": "0", "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    dist = base / "dist"
    _run([uv, "build", "--out-dir", str(dist), str(REPO)], base, env)
    (wheel,) = dist.glob("sim_consistency-*.whl")
    requirements = base / "requirements.txt"
    _run(
        [
            uv,
            "export",
            "--frozen",
            "--no-dev",
            "--no-hashes",
            "--no-emit-project",
            "--output-file",
            str(requirements),
        ],
        REPO,
        env,
    )
    venv = base / "venv"
    _run([uv, "venv", "--python", sys.executable, str(venv)], base, env)
    python = venv / "bin" / "python"
    _run(
        [uv, "pip", "install", "--python", str(python), "-r", str(requirements), str(wheel)],
        base,
        env,
    )
    # The image's /opt/sim_consistency: what the definition's %files copies there.
    project = base / "opt" / "sim_consistency"
    for line in sections()["files"].split("\n"):
        if line.strip():
            source, destination = line.split()
            target = project / Path(destination).relative_to(IMAGE_PROJECT)
            copy = shutil.copytree if (REPO / source).is_dir() else shutil.copy2
            target.parent.mkdir(parents=True, exist_ok=True)
            copy(REPO / source, target)
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    run_env = {
        **env,
        "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        "HDF5_USE_FILE_LOCKING": "FALSE",
        "SIMC_ROOT": str(base / "root"),
    }
    return {
        "python": python,
        "venv": venv,
        "dist": dist,
        "project": project,
        "cwd": elsewhere,
        "env": run_env,
    }


def _python(installed: dict, code: str) -> str:
    return _run([str(installed["python"]), "-c", code], installed["cwd"], installed["env"])


def test_the_package_is_imported_from_the_venv_not_the_checkout(installed):
    location = _python(installed, "import sim_consistency; print(sim_consistency.__file__)")
    assert Path(location.strip()).is_relative_to(installed["venv"]), location


def test_the_definitions_test_section_passes(installed):
    script = sections()["test"].replace(IMAGE_PROJECT, str(installed["project"]))
    _run(["bash", "-c", script], installed["cwd"], installed["env"])


def test_both_build_routes_ship_the_configs(installed, tmp_path):
    """``uv build`` (wheel from the sdist, as above) and the image's direct wheel build."""
    _run(
        [_uv(), "build", "--wheel", "--out-dir", str(tmp_path), str(REPO)],
        tmp_path,
        installed["env"],
    )
    for wheel in [*tmp_path.glob("*.whl"), *installed["dist"].glob("*.whl")]:
        names = set(zipfile.ZipFile(wheel).namelist())
        shipped = {n for n in names if n.startswith("sim_consistency/configs/")}
        expected = {
            f"sim_consistency/{p.relative_to(REPO)}"
            for p in (REPO / "configs").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts  # byte code of the example's import
        }
        assert shipped == expected and expected, (wheel, sorted(expected - shipped))


def test_a_stage_prints_its_help(installed):
    out = _run(
        [
            str(installed["python"]),
            str(installed["project"] / "scripts" / "layer_cka.py"),
            "--help",
        ],
        installed["cwd"],
        installed["env"],
    )
    assert "--slurm_config" in out and "--models_config" in out


def test_the_simc_console_script_is_installed(installed):
    simc = str(installed["venv"] / "bin" / "simc")
    out = _run([simc, "--help"], installed["cwd"], installed["env"])
    assert "extract" in out and "datasets check" in out
    out = _run([simc, "layer-cka", "--help"], installed["cwd"], installed["env"])
    assert out.startswith("usage: simc layer-cka ") and "--models_config" in out


def test_named_slurm_configs_resolve_from_the_installed_package(installed):
    code = (
        "import json; from sim_consistency.launch import load_slurm_config as load\n"
        "c = load('debug'); print(json.dumps([str(c.source), c.partition, c.gpus_per_node]))"
    )
    source, partition, gpus = json.loads(_python(installed, code))
    assert Path(source).is_relative_to(installed["venv"]) and Path(source).name == "debug.json"
    assert (partition, gpus) == ("debug", 0)
    # An unknown name fails as a stage error (exit 2) listing the shipped names.
    models = installed["cwd"] / "models.json"
    models.write_text(json.dumps({"vit": {"source": "timm", "model_name": "test_vit"}}))
    stage = str(installed["project"] / "scripts" / "feature_extraction.py")
    done = subprocess.run(
        [
            str(installed["python"]),
            stage,
            "--models_config",
            models.name,
            "--launcher",
            "slurm",
            "--slurm_config",
            "no_such",
        ],
        cwd=installed["cwd"],
        env=installed["env"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    message = done.stdout + done.stderr
    assert "'no_such'" in message and "debug, gpu_example" in message
    assert "Traceback" not in message


def test_the_demo_finds_its_configs_in_the_installed_package(installed):
    code = (
        "import json; from sim_consistency.stages import demo\n"
        "from sim_consistency.config.similarity import load_similarity_config\n"
        "m, s = demo.DEFAULT_MODELS_CONFIG, demo.DEFAULT_SIMILARITY_CONFIG\n"
        "print(json.dumps([str(m), str(s), len(load_similarity_config(s)),"
        " demo.demo_models(m)['layer_cka']]))"
    )
    models, similarity, n_metrics, profile = json.loads(_python(installed, code))
    for path in (models, similarity):
        assert Path(path).is_file() and Path(path).is_relative_to(installed["venv"]), path
    assert n_metrics >= 1 and profile[0] == "rn_w0"
    # The image's /opt/sim_consistency/configs (what the README points users at) is the same file.
    image_copy = installed["project"] / "configs" / "models" / "demo.json"
    assert image_copy.read_bytes() == Path(models).read_bytes()
    out = _run(
        [str(installed["python"]), str(installed["project"] / "scripts" / "demo.py"), "--help"],
        installed["cwd"],
        installed["env"],
    )
    assert "configs/models/demo.json" in out
