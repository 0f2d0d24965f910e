"""Session fixtures shared by the test suite: tiny real data built once per session."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from sim_consistency.data import build_digits
from sim_consistency.project import ProjectLocation

#: The quick demo study (session fixture ``demo_root``), shared by the demo/notebook/README tests.
pytest_plugins = ["tests.demo_study"]


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> ProjectLocation:
    """A project root with ``wds/digits`` built into it (read-only for tests: copy to modify)."""
    location = ProjectLocation.resolve(tmp_path_factory.mktemp("digits_root"))
    build_digits(location)
    return location


#: Tiny open_clip configs registered for the tests: a 2-layer ViT and a ModifiedResNet.
TINY_OPEN_CLIP_CONFIGS: dict[str, dict[str, Any]] = {
    "simc-tiny-vit": {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 64,
            "patch_size": 16,
            "head_width": 32,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    },
    "simc-tiny-rn": {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 64,
            "layers": [1, 1, 1, 1],
            "width": 16,
            "patch_size": None,
            "head_width": 32,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    },
}


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Register the tiny open_clip configs (open_clip.add_model_config) and return them."""
    import open_clip

    folder = tmp_path_factory.mktemp("open_clip_configs")
    for name, config in TINY_OPEN_CLIP_CONFIGS.items():
        (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return TINY_OPEN_CLIP_CONFIGS


def _mount_tmpfs(folder: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` on ``folder``; return why not when this machine forbids it."""
    import shutil
    import subprocess

    if sys.platform != "linux" or shutil.which("mount") is None:
        return "mounting a tmpfs needs Linux and mount(8)"
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        return f"cannot mount a tmpfs here ({result.stderr.strip() or 'not permitted'})"
    return None


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 400 KiB tmpfs (a disk that fills up); skipped with the reason where mounting fails."""
    import subprocess

    folder = tmp_path / "tmpfs"
    folder.mkdir()
    reason = _mount_tmpfs(folder, "400k")
    if reason is not None:
        pytest.skip(reason)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def tmpfs_factory(tmp_path: Path):
    """``make(size) -> folder``: tmpfs mounts of a chosen size, unmounted afterwards."""
    import subprocess

    mounted: list[Path] = []

    def make(size: str, name: str = "tmpfs") -> Path:
        folder = tmp_path / name
        folder.mkdir()
        reason = _mount_tmpfs(folder, size)
        if reason is not None:
            pytest.skip(reason)
        mounted.append(folder)
        return folder

    yield make
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)
