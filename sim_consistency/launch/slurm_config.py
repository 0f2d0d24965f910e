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

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim_consistency.config.schema import (
    Key,
    boolean,
    check_keys,
    integer,
    json_object,
    number,
    string,
    strings,
)
from sim_consistency.config.shipped import shipped_config, shipped_config_dir, shipped_names
from sim_consistency.errors import ConfigError, MissingInputError

__all__ = [
    "CONTAINER_KEYS",
    "SLURM_KEYS",
    "ContainerSpec",
    "SlurmConfig",
    "load_slurm_config",
    "resolve_slurm_config_path",
]


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


def _table(*keys: Key) -> dict[str, Key]:
    return {k.name: k for k in keys}


def _sbatch_options(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str | int | float) for v in value.values())


#: The keys of a SLURM config, with their constraints and defaults.
SLURM_KEYS: dict[str, Key] = _table(
    string("partition", nullable=True, doc="SLURM partition (default: the cluster's)"),
    integer("gpus_per_node", 0, low=0, doc="GPUs per job"),
    integer("cpus_per_task", 1, low=1, doc="CPU cores per job"),
    number("mem_gb", 4.0, low=0, low_open=True, doc="memory per job, GB"),
    integer("timeout_min", 60, low=1, doc="time limit per job, minutes"),
    string("constraint", nullable=True, doc="`--constraint` (e.g. a GPU type)"),
    integer("array_parallelism", 32, low=1, doc="array tasks running at once"),
    Key(
        "sbatch",
        "object",
        "an object of extra #SBATCH options with string, number or boolean values",
        _sbatch_options,
        {},
        doc='extra `#SBATCH` options, e.g. `{"account": "x"}`',
    ),
    strings("setup", doc="shell lines run before the job (`module load …`)"),
    json_object("container", nullable=True, doc="the Apptainer image the job runs in"),
)
#: The keys of ``container``.
CONTAINER_KEYS: dict[str, Key] = _table(
    string("image", required=True, doc="a .sif path or oras:// URI"),
    strings("bind", doc="extra folders bound into the image (the project root always is)"),
    boolean("nv", True, doc="`--nv`: expose the GPUs"),
    string("apptainer", "apptainer", doc="the apptainer (or singularity) executable"),
)


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


def load_slurm_config(value: str | Path) -> SlurmConfig:
    """Read and validate a SLURM config (every problem in the file is reported at once).

    Raises:
        MissingInputError: the file does not exist.
        ConfigError: invalid JSON, unknown keys, wrong types or values out of range (every
            line names the file, the key, the value and what is allowed).
    """
    path = resolve_slurm_config_path(value)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}).") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object (got {type(raw).__name__}).")
    problems: list[str] = []
    check_keys(str(path), raw, SLURM_KEYS, problems)
    container = raw.get("container")
    if isinstance(container, dict):
        check_keys(str(path), container, CONTAINER_KEYS, problems, prefix="container.")
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
    fields = {k: v for k, v in raw.items() if k not in ("container", "setup") and v is not None}
    return SlurmConfig(source=path, setup=tuple(raw.get("setup", ())), container=spec, **fields)
