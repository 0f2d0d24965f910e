"""The configs shipped with the package: ``sim_consistency/configs/<kind>/<name>.<ext>``.

They are package data, found with :mod:`importlib.resources`, so a named config (``--slurm_config
debug``, the demo's models and similarity configs) resolves the same in a checkout, in a
non-editable install and inside the Apptainer image. The repository's top-level ``configs/`` is a
symlink to this directory: one copy, read and copied by users from there.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["SHIPPED_KINDS", "shipped_config", "shipped_config_dir", "shipped_names"]

#: The sub-folders of ``configs/`` and the file extension of their configs.
SHIPPED_KINDS: dict[str, str] = {
    "datasets": ".txt",
    "model_sets": ".json",
    "models": ".json",
    "similarity": ".json",
    "slurm": ".json",
}


def shipped_config_dir(kind: str) -> Path:
    """Return the installed folder of the shipped ``kind`` configs (``slurm``, ``models``, …)."""
    if kind not in SHIPPED_KINDS:
        raise ValueError(f"shipped configs: unknown kind {kind!r}; one of {sorted(SHIPPED_KINDS)}.")
    folder = files("sim_consistency") / "configs" / kind
    # Wheels are installed unpacked, so the resource is a real folder (never inside a zip).
    return Path(str(folder))


def shipped_names(kind: str) -> list[str]:
    """Return the names (file stems) of the shipped ``kind`` configs, sorted."""
    folder = shipped_config_dir(kind)
    return sorted(p.stem for p in folder.glob(f"*{SHIPPED_KINDS[kind]}"))


def shipped_config(kind: str, name: str) -> Path:
    """Return the file of the shipped ``kind`` config ``name`` (it may not exist: check it)."""
    folder = shipped_config_dir(kind)
    return folder / f"{name}{SHIPPED_KINDS[kind]}"
