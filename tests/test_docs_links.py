"""Every link and repository path the documentation names exists (README.md, DESIGN.md, …)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "DESIGN.md", "container/README.md", "benchmarks/RESULTS.md"]
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`\n]+)`")
#: Top-level entries of the repository a backticked path may start with.
_TRACKED_ROOTS = sorted(
    {
        line.split("/", 1)[0]
        for line in subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    }
    - {"README.md"}
)


def _targets(text: str) -> list[str]:
    return [a or b for a, b in _LINK.findall(text)]


def _code_paths(text: str) -> list[str]:
    """Backticked tokens that name a file or folder of this repository (no placeholders)."""
    found = []
    for token in _CODE.findall(text):
        path = token.split()[0] if " " in token else token
        path = path.split(":", 1)[0].rstrip(".,;")
        if any(ch in path for ch in "<>*{}…$|=") or "/" not in path:
            continue
        if path.split("/", 1)[0] in _TRACKED_ROOTS:
            found.append(path)
    return found


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_resolve(doc):
    path = REPO / doc
    assert path.is_file(), doc
    broken = []
    for target in _targets(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # web address or in-page anchor
        if not (path.parent / target.split("#", 1)[0]).exists():
            broken.append(target)
    assert not broken, f"{doc}: links to missing files: {broken}"


@pytest.mark.parametrize("doc", DOCS)
def test_named_repository_paths_exist(doc):
    path = REPO / doc
    missing = sorted(
        {p for p in _code_paths(path.read_text(encoding="utf-8")) if not (REPO / p).exists()}
    )
    assert not missing, f"{doc}: names repository paths that do not exist: {missing}"


def test_design_doc_is_linked_from_the_readme():
    assert "DESIGN.md" in _targets((REPO / "README.md").read_text(encoding="utf-8"))
