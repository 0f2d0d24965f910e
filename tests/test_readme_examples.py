"""README examples run: every shell and Python example of the README, against a demo root.

The shell blocks (```bash) are split into commands (continuation lines joined, comments
dropped). Stage commands (``uv run python scripts/…``) run in order, as written, with this
interpreter, from the repository root, against a copy of the session's quick demo root
(``SIMC_ROOT``) — the substitutions: ``configs/models/demo.json`` becomes the quick study's
models config and ``project_root/`` the copy's root, and every model id the examples name is checked to exist in the real
``configs/models/demo.json`` too. Commands that cannot run inside a test (building the
container, releasing, the make targets that run this suite or the demo) must be listed in
``NOT_RUN`` with the reason; any other command fails the test, so a new example is run or
explicitly excused. ``uv run simc …`` commands run like the scripts they stand for. Python blocks
run as scripts against the same root, except those whose first line names the test that runs
them (``# (run by tests/…)``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DEMO_CONFIG = "configs/models/demo.json"
#: The examples' generated soup-study config (build_variants --generate), under the root.
GENERATED_CONFIG = "project_root/models/generated/demo.json"

#: Commands the test does not run, by their first words, with the reason.
NOT_RUN: dict[str, str] = {
    "make demo": "the whole demo; tests/test_demo_and_notebooks.py runs it on a quick study",
    "make test": "this test suite",
    "make lint": "ruff, run by CI's lint step",
    "make typecheck": "mypy, run by tests/test_typecheck.py and CI's mypy job",
    "uv run pytest": "this test suite",
    "uv run --frozen pytest": "this test suite",
    "uv sync": "would change the environment running the tests",
    "apptainer": "needs Apptainer and the released image (tests/container checks the image)",
    "git tag": "a release",
}
#: A Python example that starts with this comment needs inputs of its own; the test it names runs it.
OWN_TEST = "# (run by tests/"
_ID_FLAGS = ("--model_key", "--reference", "--base", "--barrier_models")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def _commands(block: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        line = line.split(" # ")[0].strip() if not line.lstrip().startswith("#") else ""
        if line:
            commands.append(line)
    return commands


def _shell_commands() -> list[str]:
    return [c for block in _blocks("bash") for c in _commands(block)]


def _is_stage(command: str) -> bool:
    return command.startswith(("uv run python scripts/", "uv run simc "))


def _ids_named(argv: list[str]) -> set[str]:
    ids, flag = set(), None
    for word in argv:
        if word.startswith("--"):
            flag = word if word in _ID_FLAGS else None
        elif flag:
            ids.add(word)
    return ids


def test_every_shell_example_is_run_or_excused():
    commands = _shell_commands()
    assert sum(map(_is_stage, commands)) >= 8
    for command in commands:
        if _is_stage(command):
            argv = shlex.split(command)  # valid shell: no […] or a|b placeholders
            assert not any(ch in command for ch in "[]|…"), command
            assert all(not w.startswith("<") for w in argv), command
        else:
            assert any(command.startswith(p) for p in NOT_RUN), f"not run, not excused: {command}"


def test_example_model_ids_exist_in_the_demo_config():
    demo_ids = set(json.loads((REPO / DEMO_CONFIG).read_text()))
    for command in filter(_is_stage, _shell_commands()):
        argv = shlex.split(command)
        if "--models_config" in argv:
            config = argv[argv.index("--models_config") + 1]
            assert config in (DEMO_CONFIG, GENERATED_CONFIG), command
        assert _ids_named(argv) <= demo_ids, (command, _ids_named(argv) - demo_ids)


@pytest.fixture(scope="module")
def example_root(demo_root, tmp_path_factory):
    """A copy of the quick demo root the examples may rewrite, and its models config."""
    location, argv = demo_root
    root = tmp_path_factory.mktemp("readme") / "root"
    shutil.copytree(location.root, root, symlinks=True)
    return root, argv[argv.index("--models_config") + 1]


def _run(command: str, root: Path, config: str) -> subprocess.CompletedProcess:
    command = command.replace(DEMO_CONFIG, config).replace("project_root/", f"{root}/")
    argv = shlex.split(command)
    assert argv[:3] in (["uv", "run", "python"], ["uv", "run", "simc"]), command
    # `simc` is the installed console script of this same interpreter's environment.
    program = (
        [sys.executable] if argv[2] == "python" else [sys.executable, "-m", "sim_consistency.cli"]
    )
    return subprocess.run(
        [*program, *argv[3:]],
        cwd=REPO,
        env={**os.environ, "SIMC_ROOT": str(root), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_shell_examples_run_against_the_demo_root(example_root):
    root, config = example_root
    for command in filter(_is_stage, _shell_commands()):
        result = _run(command, root, config)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}{result.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_python_examples_run_against_the_demo_root(example_root, tmp_path):
    root, _ = example_root
    blocks = [b for b in _blocks("python") if not b.startswith(OWN_TEST)]
    assert blocks
    for i, block in enumerate(blocks):
        script = tmp_path / f"example_{i}.py"
        script.write_text(block)
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=REPO,
            env={**os.environ, "SIMC_ROOT": str(root)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{block}\n{result.stderr[-3000:]}"
