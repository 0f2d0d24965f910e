"""The shared flags, declared once as field groups a stage's settings inherit."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sim_consistency.project import ProjectLocation
from sim_consistency.runtime.flags import option

if TYPE_CHECKING:
    from sim_consistency.config import ModelSpec
    from sim_consistency.launch import LaunchOptions

__all__ = [
    "Datasets",
    "Device",
    "Force",
    "Launcher",
    "Models",
    "Profile",
    "StageSettings",
    "Threads",
    "Wandb",
]


@dataclass(frozen=True, kw_only=True)
class StageSettings:
    """Base of every stage's settings: the project root and ``-v``.

    Subclasses (field groups and stages) extend :meth:`validated`, calling ``super()`` first.
    """

    project_root: Path = option(
        "project root",
        default=None,
        shown_default="$SIMC_ROOT, else project_root in the checkout",
    )
    verbose: bool = option("debug logging", default=False, short="-v")

    @property
    def location(self) -> ProjectLocation:
        """The project's folder layout."""
        return ProjectLocation(self.project_root)

    def validated(self):
        """Return these settings checked and normalised (raises ConfigError naming the flag)."""
        return replace(self, project_root=ProjectLocation.resolve(self.project_root).root)


@dataclass(frozen=True, kw_only=True)
class Models(StageSettings):
    """``--models_config`` and ``--model_key``: which models of which config."""

    models_config: Path = option(
        "models config JSON (configs/models/*.json)", default=None, required=True
    )
    model_ids: tuple[str, ...] = option(
        "only these model ids", default=(), flag="--model_key", nargs="+", shown_default="all"
    )

    def load_specs(self) -> dict[str, ModelSpec]:
        """Return the models config's entries (paths relative to the project root)."""
        from sim_consistency.config import load_models_config

        return load_models_config(self.models_config, base_dir=self.project_root)

    def default_model_ids(self, specs: dict[str, ModelSpec]) -> list[str]:
        """The models used when ``--model_key`` is not given: every entry."""
        return list(specs)

    def validated(self):
        from sim_consistency.config import select_models

        s = super().validated()
        config = Path(s.models_config).resolve()
        s = replace(s, models_config=config)
        specs = s.load_specs()
        ids = select_models(specs, list(s.model_ids)) if s.model_ids else None
        return replace(s, model_ids=tuple(ids or s.default_model_ids(specs)))


@dataclass(frozen=True, kw_only=True)
class Datasets(StageSettings):
    """``--datasets``: dataset names or ``.txt`` lists of names."""

    datasets: tuple[str, ...] = option(
        "dataset names or .txt files with one name per line",
        default=("wds/digits",),
        nargs="+",
    )

    def validated(self):
        from sim_consistency.data import read_dataset_list

        s = super().validated()
        return replace(s, datasets=tuple(read_dataset_list(s.datasets)))


@dataclass(frozen=True, kw_only=True)
class Launcher(StageSettings):
    """``--launcher``, ``--slurm_config``, ``--no_wait``: where the work items run."""

    launcher: Literal["local", "slurm"] = option(
        "where work runs", default="local", choices=("local", "slurm")
    )
    slurm_config: str | None = option(
        "configs/slurm/<name>.json, or just <name> (with --launcher slurm)", default=None
    )
    no_wait: bool = option(
        "with --launcher slurm: submit and return; rerun the command to collect", default=False
    )

    def launch_options(self) -> LaunchOptions:
        """Return the launch options (the SLURM config is loaded and checked here)."""
        from sim_consistency.launch import launch_options_from_args

        return launch_options_from_args(self)


@dataclass(frozen=True, kw_only=True)
class Force(StageSettings):
    """``--force``: rebuild outputs even when their content key is current."""

    force: bool = option("recompute even up-to-date outputs", default=False)


@dataclass(frozen=True, kw_only=True)
class Device(StageSettings):
    """``--device``: where torch computes."""

    device: str = option("auto | cpu | cuda | cuda:N", default="auto")


@dataclass(frozen=True, kw_only=True)
class Threads(StageSettings):
    """``--num_threads``: torch's intra-op CPU threads (set by the driver before any work)."""

    num_threads: int | None = option(
        "torch intra-op CPU threads",
        default=None,
        type=int,
        shown_default="$SLURM_CPUS_PER_TASK, else the CPUs this process may use",
    )

    def validated(self):
        from sim_consistency.threads import resolve_num_threads

        s = super().validated()
        resolve_num_threads(s.num_threads)  # raises ConfigError naming the bad value
        return s


@dataclass(frozen=True, kw_only=True)
class Wandb(StageSettings):
    """``--wandb``: log the run's config, metrics and tables to Weights & Biases."""

    wandb: bool = option(
        "log to Weights & Biases (offline mode unless configured)", default=False, negatable=True
    )


@dataclass(frozen=True, kw_only=True)
class Profile(StageSettings):
    """``--profile``: fill the flags left unset the way another code base does by default.

    :mod:`sim_consistency.runtime.profiles` lists what each profile sets; the stage calls
    :func:`~sim_consistency.runtime.profiles.resolve_profile` in its ``validated``.
    """

    profile: str | None = option(
        "rep2rep: Rep2Rep's defaults for the flags you leave unset (train split with its 10k "
        "subset for similarities; rep2rep probes, seeds 0 1 2, Rep2Rep's own search)",
        default=None,
        choices=("rep2rep",),
        shown_default="none: our defaults",
    )
