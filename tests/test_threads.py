"""Thread count: --num_threads > SLURM_CPUS_PER_TASK > CPU affinity; set by every stage."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch

from sim_consistency.errors import ConfigError
from sim_consistency.launch.slurm import JobCall
from sim_consistency.runtime import Stage, Threads, run_stage
from sim_consistency.threads import (
    available_cpus,
    resolve_num_threads,
    set_torch_threads,
    threads_metadata,
)


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_precedence_flag_then_slurm_then_affinity():
    env = {"SLURM_CPUS_PER_TASK": "3"}
    assert resolve_num_threads(2, env).n_threads == 2
    assert resolve_num_threads(2, env).source == "--num_threads"
    assert (resolve_num_threads(None, env).n_threads, resolve_num_threads(None, env).source) == (
        3,
        "SLURM_CPUS_PER_TASK",
    )
    fallback = resolve_num_threads(None, {})
    assert fallback.source == "cpu_affinity" and fallback.n_threads == available_cpus()
    if hasattr(os, "sched_getaffinity"):
        assert available_cpus() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_slurm_value_is_named(value):
    with pytest.raises(ConfigError, match="SLURM_CPUS_PER_TASK"):
        resolve_num_threads(None, {"SLURM_CPUS_PER_TASK": value})


def test_bad_flag_is_named():
    with pytest.raises(ConfigError, match="--num_threads"):
        resolve_num_threads(0, {})


@dataclass(frozen=True, kw_only=True)
class _ThreadsSettings(Threads):
    """A stage with only the shared flags and --num_threads."""


_SEEN: list[int] = []


def _record_threads(settings: _ThreadsSettings, item: int) -> None:
    _SEEN.append(torch.get_num_threads())


_STAGE = Stage(
    name="threads",
    settings=_ThreadsSettings,
    description="Record torch's thread count inside a work item.",
    plan=lambda settings: [0],
    run=_record_threads,
    outputs=lambda item: [],
)


def test_every_stage_sets_threads_before_its_work(monkeypatch, tmp_path):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    root = ["--project_root", str(tmp_path)]
    assert run_stage(_STAGE, [*root, "--num_threads", "1"]) == 0
    assert _SEEN[-1] == torch.get_num_threads() == 1
    assert threads_metadata() == {"torch_num_threads": 1, "num_threads_source": "--num_threads"}
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    assert run_stage(_STAGE, root) == 0
    assert _SEEN[-1] == 2
    assert threads_metadata() == {
        "torch_num_threads": 2,
        "num_threads_source": "SLURM_CPUS_PER_TASK",
    }


def test_bad_flag_exits_2_from_a_stage(capsys, tmp_path):
    assert run_stage(_STAGE, ["--project_root", str(tmp_path), "--num_threads", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --num_threads") and "Traceback" not in err


def _report_threads(_item):
    return torch.get_num_threads()


def test_slurm_job_applies_the_flag_or_its_cpus(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    assert JobCall(_report_threads, 1)(None) == 1
    assert JobCall(_report_threads)(None) == 2


def test_metadata_without_a_stage_says_torch_default():
    set_torch_threads(1)
    torch.set_num_threads(2)  # changed behind the helper's back
    assert threads_metadata()["num_threads_source"] == "torch default"
