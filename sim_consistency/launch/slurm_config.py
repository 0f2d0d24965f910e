"""SLURM resources of a run: ``configs/slurm/<name>.json`` → a frozen, validated spec.

A config names the partition, GPUs, CPUs, memory, time limit, constraint, how many array
tasks may run at once, extra ``#SBATCH`` options, shell lines to run before the job (``module
load …``) and, optionally, the Apptainer image the job's Python runs in::

    {"partition": "gpu", "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32,
     "timeout_min": 240, "constraint": "a100", "array_parallelism": 16,
     "sbatch": {"account": "myproject"}, "setup": [],
     "container": {"image": "/shared/images/sim_consistency.sif", "bind": ["/data"]}}
"""

from __future__ import annotations

import difflib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim_consistency.config.shipped import shipped_config, shipped_config_dir, shipped_names
from sim_consistency.errors import ConfigError, MissingInputError

__all__ = ["ContainerSpec", "SlurmConfig", "load_slurm_config", "resolve_slurm_config_path"]


@dataclass(frozen=True)
class ContainerSpec:
    """The Apptainer image a job's Python runs in (``apptainer exec --nv --bind … image``)."""

    image: str
    bind: tuple[str, ...] = ()
    nv: bool = True
    apptainer: str = "apptainer"

    def python_command(self, project_root: Path) -> str:
        """Return the shell command that starts the image's Python with the project bound."""
        binds = ",".join(dict.fromkeys([str(project_root), *self.bind]))
        parts = [self.apptainer, "exec"]
        if self.nv:
            parts.append("--nv")
        parts += ["--bind", binds, self.image, "python"]
        return " ".join(shlex.quote(p) for p in parts)


@dataclass(frozen=True)
class SlurmConfig:
    """Resources of every job of a run (one config applies to all its work items)."""

    source: Path
    partition: str | None = None
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float = 4.0
    timeout_min: int = 60
    constraint: str | None = None
    array_parallelism: int = 32
    sbatch: dict[str, Any] = field(default_factory=dict)
    setup: tuple[str, ...] = ()
    container: ContainerSpec | None = None


_TYPES: dict[str, tuple[type, ...]] = {
    "partition": (str, type(None)),
    "gpus_per_node": (int,),
    "cpus_per_task": (int,),
    "mem_gb": (int, float),
    "timeout_min": (int,),
    "constraint": (str, type(None)),
    "array_parallelism": (int,),
    "sbatch": (dict,),
    "setup": (list,),
    "container": (dict, type(None)),
}
_CONTAINER_TYPES: dict[str, tuple[type, ...]] = {
    "image": (str,),
    "bind": (list,),
    "nv": (bool,),
    "apptainer": (str,),
}
_POSITIVE = ("cpus_per_task", "mem_gb", "timeout_min", "array_parallelism")


def resolve_slurm_config_path(value: str | Path) -> Path:
    """Return the file of ``--slurm_config``: a path, or the name of a shipped config.

    Names are the files of ``configs/slurm/``, installed with the package (so they resolve in
    a non-editable install and in the image too); an existing file of that name wins.
    """
    path = Path(value).expanduser()
    if path.is_file():
        return path.resolve()
    named = shipped_config("slurm", str(value))
    if path.suffix == "" and path.name == str(value) and named.is_file():
        return named
    raise MissingInputError(
        f"--slurm_config: no file {str(value)!r}. Give a path to a JSON file or one of the "
        f"names in {shipped_config_dir('slurm')}: {', '.join(shipped_names('slurm')) or '(none)'}."
    )


def _check_keys(where: str, raw: dict, types: dict[str, tuple[type, ...]]) -> list[str]:
    problems = []
    for key in sorted(set(raw) - set(types)):
        close = difflib.get_close_matches(key, list(types), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else "."
        problems.append(f"{where}: unknown key '{key}'{hint} Allowed: {', '.join(sorted(types))}.")
    for key, allowed in types.items():
        if key in raw and (
            not isinstance(raw[key], allowed) or (bool in allowed) != isinstance(raw[key], bool)
        ):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            problems.append(f"{where}: '{key}' must be {names} (got {raw[key]!r}).")
    return problems


def load_slurm_config(value: str | Path) -> SlurmConfig:
    """Read and validate a SLURM config (every problem in the file is reported at once).

    Raises:
        MissingInputError: the file does not exist.
        ConfigError: invalid JSON, unknown keys, wrong types or non-positive resources.
    """
    path = resolve_slurm_config_path(value)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}).") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object (got {type(raw).__name__}).")
    problems = _check_keys(str(path), raw, _TYPES)
    for key in _POSITIVE:
        value_ = raw.get(key)
        if isinstance(value_, (int, float)) and not isinstance(value_, bool) and value_ <= 0:
            problems.append(f"{path}: '{key}' must be positive (got {value_}).")
    if isinstance(raw.get("gpus_per_node"), int) and raw["gpus_per_node"] < 0:
        problems.append(f"{path}: 'gpus_per_node' must be >= 0 (got {raw['gpus_per_node']}).")
    container = raw.get("container")
    if isinstance(container, dict):
        problems += _check_keys(f"{path}: container", container, _CONTAINER_TYPES)
        if "image" not in container:
            problems.append(f"{path}: container: 'image' is required (a .sif path or oras:// URI).")
    if problems:
        raise ConfigError("\n".join(problems))
    spec = (
        ContainerSpec(
            image=container["image"],
            bind=tuple(container.get("bind", ())),
            nv=container.get("nv", True),
            apptainer=container.get("apptainer", "apptainer"),
        )
        if container
        else None
    )
    fields = {k: v for k, v in raw.items() if k not in ("container", "setup")}
    return SlurmConfig(source=path, setup=tuple(raw.get("setup", ())), container=spec, **fields)
