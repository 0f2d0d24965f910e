"""The Apptainer definition, checked offline (no Apptainer runtime can be installed here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
DEFINITION = REPO / "container" / "sim_consistency.def"
REQUIRED_SECTIONS = {"arguments", "files", "environment", "post", "runscript", "test", "labels"}


def sections(path: Path = DEFINITION) -> dict[str, str]:
    """Split a definition into ``{"header": …, "<section>": body}`` (Apptainer's %-sections)."""
    out: dict[str, list[str]] = {"header": []}
    current = "header"
    for line in path.read_text().splitlines():
        match = re.match(r"^%(\w+)\s*$", line)
        if match:
            current = match.group(1)
            assert current not in out, f"section %{current} appears twice"
            out[current] = []
        else:
            out[current].append(line)
    return {name: "\n".join(lines) for name, lines in out.items()}


def _install_command(text: str) -> str:
    commands = [line.strip() for line in text.splitlines() if line.strip().startswith("uv sync")]
    assert len(commands) == 1, f"expected one 'uv sync' command, found {commands}"
    return commands[0]


def _fenced_commands(markdown: str) -> list[str]:
    """Lines of the shell code blocks (``` / ```bash / ```sh / ```console) of a Markdown text."""
    commands, language = [], None
    for line in markdown.splitlines():
        if line.startswith("```"):
            language = None if language is not None else (line[3:].strip() or "plain")
        elif language in ("plain", "bash", "sh", "console"):
            commands.append(line.strip())
    return commands


def _project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_definition_parses_with_spython_and_has_the_required_fields():
    parsers = pytest.importorskip("spython.main.parse.parsers", reason="spython not installed")
    recipes = parsers.SingularityParser(str(DEFINITION)).recipe
    assert list(recipes) == ["spython-base"]  # one stage: nothing was misread as a stage name
    recipe = recipes["spython-base"]
    assert recipe.fromHeader == "python:3.11-slim-bookworm"
    assert "HDF5_USE_FILE_LOCKING=FALSE" in recipe.environ
    assert any(e.startswith("PATH=/opt/sim_consistency/.venv/bin") for e in recipe.environ)
    assert "uv sync --frozen --no-dev --no-editable" in recipe.install
    assert "org.opencontainers.image.version {{ VERSION }}" in recipe.labels
    assert len(recipe.files) >= 5 and recipe.test and recipe.cmd


def test_sections_runscript_test_and_version():
    parts = sections()
    assert set(parts) >= REQUIRED_SECTIONS
    header = dict(
        line.split(":", 1) for line in parts["header"].splitlines() if re.match(r"^\w+:", line)
    )
    assert header["Bootstrap"].strip() == "docker"
    # %runscript runs the command it is given (apptainer run image.sif python scripts/…).
    assert 'exec "$@"' in parts["runscript"]
    # %test proves the CUDA build of torch, the environment and a real (tiny) extraction.
    assert "torch.version.cuda" in parts["test"]
    assert 'os.environ["HDF5_USE_FILE_LOCKING"] == "FALSE"' in parts["test"]
    assert "scripts/feature_extraction.py" in parts["test"]
    # The version label is a build argument whose default is the package version.
    arguments = dict(
        line.strip().split("=", 1) for line in parts["arguments"].splitlines() if "=" in line
    )
    assert arguments["VERSION"] == _project_version()
    assert "org.opencontainers.image.version {{ VERSION }}" in parts["labels"]
    # The install is frozen to the lock and checks that torch is a CUDA build.
    assert "torch.version.cuda" in parts["post"]
    assert "UV_PYTHON_DOWNLOADS=never" in parts["post"]


def test_every_copied_file_exists_and_the_project_can_be_built_from_them():
    copied = []
    for line in sections()["files"].splitlines():
        if not line.strip():
            continue
        source, destination = line.split()
        assert (REPO / source).exists(), f"%files copies {source}, which is not in the repository"
        assert destination.startswith("/opt/sim_consistency/")
        copied.append(source)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = {"pyproject.toml", "uv.lock", pyproject["project"]["readme"], "sim_consistency"}
    needed |= set(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    assert needed <= set(copied)


def test_lock_gives_a_cuda_torch_on_linux():
    lock = (REPO / "uv.lock").read_text()
    torch_entries = re.findall(
        r'\[\[package\]\]\nname = "torch"\n(.*?)\n\n\[\[package\]\]', lock, re.S
    )
    assert torch_entries
    for entry in torch_entries:
        assert re.search(r'name = "nvidia-cudnn-cu\d+".*sys_platform == .linux', entry), (
            "uv.lock's torch has no CUDA runtime dependency on Linux: the image would be CPU-only"
        )


@pytest.mark.parametrize("readme", ["README.md", "container/README.md"])
def test_readme_documents_the_image_install_command(readme):
    documented = [
        c for c in _fenced_commands((REPO / readme).read_text()) if c.startswith("uv sync")
    ]
    expected = _install_command(sections()["post"])
    assert expected in documented, (
        f"{readme}: no fenced command equals the image's install command {expected!r} "
        f"(found {documented or 'none'}); paste the section from container/README.md."
    )


def test_container_readme_snippet_is_the_readme_section():
    """container/README.md carries the README's "Container and SLURM" section word for word."""
    readme = (REPO / "README.md").read_text()
    section = readme[
        readme.index("## Container and SLURM") : readme.index(
            "\n## ", readme.index("## Container and SLURM") + 1
        )
    ]
    snippet = (REPO / "container" / "README.md").read_text()
    start = snippet.index("### Container and SLURM")
    body = snippet[start : snippet.index("\n---", start)]
    assert body.strip() == section.replace("## ", "### ", 1).strip()
