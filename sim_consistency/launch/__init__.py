"""Run a stage's work items in this process or as SLURM jobs (submitit); nobody else knows which.

Stages call :func:`launch` with picklable work items and a picklable function of one item;
``--launcher``, ``--slurm_config`` and ``--no_wait`` become :class:`LaunchOptions` through
:func:`launch_options_from_args`.
"""

from sim_consistency.launch.launcher import (
    LaunchOptions,
    failed_jobs_path,
    launch,
    launch_options_from_args,
)
from sim_consistency.launch.report import JobOutcome, LaunchReport, read_failed_jobs
from sim_consistency.launch.slurm import JOB_ENVIRONMENT
from sim_consistency.launch.slurm_config import ContainerSpec, SlurmConfig, load_slurm_config

__all__ = [
    "JOB_ENVIRONMENT",
    "ContainerSpec",
    "JobOutcome",
    "LaunchOptions",
    "LaunchReport",
    "SlurmConfig",
    "failed_jobs_path",
    "launch",
    "launch_options_from_args",
    "load_slurm_config",
    "read_failed_jobs",
]
