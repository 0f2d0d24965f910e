"""scripts/*.py from any directory: outputs land in the checkout's root; a missing environment
gives a one-line hint (scripts/_entry.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sim_consistency.project import ProjectLocation

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (REPO / "scripts").glob("*.py") if not p.name.startswith("_"))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SIMC_ROOT", "PYTHONPATH")}
    return {**env, **extra}


def _run_args(script: str, tmp_path: Path) -> list[str]:
    """Flags that make ``script`` start real work (which needs the environment)."""
    args = ["--project_root", str(tmp_path / "root")]
    if script == "import_rep2rep.py":
        return ["features", *args]
    if script.startswith("download_ds/"):
        return ["--help"]
    if script not in ("demo.py", "train_demo_models.py", "export_rep2rep.py"):
        args += ["--models_config", str(tmp_path / "models.json")]
    if script == "combined_probe.py":  # its required flags
        args += ["--model_sets", str(tmp_path / "sets.json"), "--datasets", "wds/digits"]
    if script == "export_rep2rep.py":
        args += ["--rep2rep_root", str(tmp_path / "r2r")]
    if script == "probe_transfer.py":
        args += ["--source_dataset", "wds/a", "--target_datasets", "wds/b"]
    return args


@pytest.mark.parametrize("script", SCRIPTS + ["download_ds/download_webdatasets.py"])
def test_missing_environment_is_one_line_hint(script, tmp_path):
    """A Python without the project's packages (-S: no site-packages) gets a hint, not a trace;
    ``--help`` needs only the standard library where the stage's flags are generated."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    command = [sys.executable, "-S", str(REPO / "scripts" / script)]
    help_out = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, cwd=cwd, env=_env()
    )
    assert "Traceback" not in help_out.stderr
    if help_out.returncode == 0:
        assert help_out.stdout.startswith("usage:")
    out = subprocess.run(
        [*command, *_run_args(script, tmp_path)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(),
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"error: scripts/{script}: this Python ({sys.executable}) cannot import")
    assert f"`make sync` once in {REPO}" in line and f"uv run python scripts/{script}" in line
    assert not list(cwd.iterdir())


@pytest.fixture
def checkout(tmp_path, digits_root) -> Path:
    """A copy of the repository's code (a second checkout) whose project root has digits."""
    copy = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("sim_consistency", "scripts"):
        shutil.copytree(REPO / name, copy / name, ignore=ignore)
    for name in ("pyproject.toml", "project_location.py"):
        shutil.copy2(REPO / name, copy / name)
    location = ProjectLocation.resolve(copy / "project_root").create()
    os.symlink(digits_root.wds_dataset_dir("digits"), location.wds_dataset_dir("digits"))
    return copy


@pytest.mark.slow
@pytest.mark.parametrize("start", ["scripts", "elsewhere"])
def test_outputs_land_in_the_checkouts_root_wherever_the_script_starts(start, checkout, tmp_path):
    """`cd scripts && python feature_extraction.py …` makes no scripts/project_root."""
    cwd = checkout / "scripts" if start == "scripts" else tmp_path / "elsewhere"
    cwd.mkdir(exist_ok=True)
    before = sorted(p.name for p in cwd.iterdir())
    config = tmp_path / "models.json"
    config.write_text('{"vit": {"source": "timm", "model_name": "test_vit", "num_classes": 0}}')
    out = subprocess.run(
        [
            sys.executable,
            "feature_extraction.py"
            if start == "scripts"
            else str(checkout / "scripts/feature_extraction.py"),
        ]
        + ["--models_config", str(config), "--splits", "test", "--max_samples", "8"]
        + ["--num_workers", "0", "--num_threads", "1"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(PYTHONPATH=str(checkout)),  # this checkout's package, not the installed one
    )
    assert out.returncode == 0, out.stderr
    expected = ProjectLocation(checkout / "project_root").feature_file("wds/digits", "test", "vit")
    assert expected.is_file()
    assert sorted(p.name for p in cwd.iterdir() if p.name != "__pycache__") == [
        b for b in before if b != "__pycache__"
    ]
