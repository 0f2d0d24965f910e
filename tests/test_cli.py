"""The ``simc`` console command: dispatch table, help without heavy imports, ≡ the scripts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from sim_consistency import cli
from sim_consistency.project import ProjectLocation

REPO = Path(__file__).resolve().parents[1]
SIMC = Path(sys.executable).parent / "simc"
HEAVY = ("torch", "timm", "h5py", "open_clip", "numpy", "sklearn", "matplotlib", "wandb")


def _simc(*args: str, **kwargs) -> subprocess.CompletedProcess:
    assert SIMC.is_file(), f"{SIMC}: console script missing; run `make sync`"
    return subprocess.run([str(SIMC), *args], capture_output=True, text=True, **kwargs)


def _imported_by(code: str) -> set[str]:
    """Return the top-level modules a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True
    )
    return set(out.stdout.split())


def test_table_covers_every_stage_script():
    scripts = {
        p.relative_to(REPO).as_posix()
        for p in (REPO / "scripts").glob("*.py")
        if not p.name.startswith("_")
    }
    assert {c.script for c in cli.COMMANDS.values()} == scripts
    for command in [*cli.COMMANDS.values(), *cli.DATASETS_COMMANDS.values()]:
        assert command.description and "\n" not in command.description
        module_path = REPO / command.module.replace(".", "/")
        assert (
            module_path.with_suffix(".py").is_file() or (module_path / "__init__.py").is_file()
        ), command.module
        if command.script:
            assert f'run_main("{command.module}")' in (REPO / command.script).read_text()


def test_top_level_help_lists_commands_and_imports_nothing_heavy():
    out = _simc("--help")
    assert out.returncode == 0, out.stderr
    for name, command in cli.COMMANDS.items():
        assert re.search(
            rf"^  {re.escape(name)} +{re.escape(command.description)}$", out.stdout, re.M
        )
    assert "datasets check" in out.stdout
    imported = _imported_by("from sim_consistency.cli import main\nmain(['--help'])")
    assert not imported & set(HEAVY), imported & set(HEAVY)
    stage_modules = _imported_by("from sim_consistency.cli import main\nmain(['datasets'])")
    assert "torch" not in stage_modules


def test_datasets_check_help_does_not_import_torch():
    imported = _imported_by(
        "from sim_consistency.cli import main\n"
        "try:\n    main(['datasets', 'check', '--help'])\nexcept SystemExit:\n    pass"
    )
    assert not imported & {"torch", "timm", "h5py", "open_clip"}


def test_unknown_command_suggests_and_exits_2(capsys):
    assert cli.main(["extrat"]) == 2
    assert "Did you mean 'extract'?" in capsys.readouterr().err
    assert cli.main(["datasets", "chek"]) == 2
    assert "Did you mean 'datasets check'?" in capsys.readouterr().err
    assert cli.main([]) == 2


def _help_body(text: str) -> tuple[list[str], str]:
    """Split ``--help`` output into the usage's words (program name dropped) and the rest."""
    usage, _, rest = text.partition("\n\n")
    words = usage.split()
    assert words[0] == "usage:"
    return words[3:] if words[1] == "simc" else words[2:], rest


@pytest.mark.slow
@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_subcommand_help_equals_script_help(name):
    command = cli.COMMANDS[name]
    env = {**os.environ, "COLUMNS": "100"}
    via_simc = _simc(name, "--help", env=env)
    via_script = subprocess.run(
        [sys.executable, str(REPO / command.script), "--help"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert via_simc.returncode == via_script.returncode == 0, via_simc.stderr
    if name != "import-rep2rep":  # its parser sets prog itself
        assert via_simc.stdout.startswith(f"usage: simc {name} ")
    assert _help_body(via_simc.stdout) == _help_body(via_script.stdout)


def _cache_digest(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        out = {"keys": f["keys"].asstr()[()].tolist(), "labels": f["labels"][()].tolist()}
        out.update({name: f["blocks"][name][()].tobytes() for name in f["blocks"]})
        out["content_key"] = f.attrs["content_key"]
    return out


@pytest.mark.slow
def test_simc_extract_equals_the_script(tmp_path, digits_root):
    """The same flags through `simc extract` and scripts/feature_extraction.py: same caches."""
    config = tmp_path / "models.json"
    config.write_text('{"vit": {"source": "timm", "model_name": "test_vit", "num_classes": 10}}')
    roots = {}
    for how in ("simc", "script"):
        location = ProjectLocation.resolve(tmp_path / how).create()
        os.symlink(digits_root.wds_dataset_dir("digits"), location.wds_dataset_dir("digits"))
        roots[how] = location
    flags = ["--models_config", str(config), "--splits", "test", "--max_samples", "24"]
    flags += ["--batch_size", "8", "--num_workers", "0", "--num_threads", "1"]
    via_simc = _simc("extract", "--project_root", str(roots["simc"].root), *flags)
    via_script = subprocess.run(
        [sys.executable, str(REPO / "scripts/feature_extraction.py"), "--project_root"]
        + [str(roots["script"].root), *flags],
        capture_output=True,
        text=True,
    )
    assert via_simc.returncode == via_script.returncode == 0, via_simc.stderr + via_script.stderr
    files = {how: loc.feature_file("wds/digits", "test", "vit") for how, loc in roots.items()}
    assert _cache_digest(files["simc"]) == _cache_digest(files["script"])
    assert len(_cache_digest(files["simc"])["keys"]) == 24
