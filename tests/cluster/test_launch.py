"""The launcher: local runs, validation, failed_jobs.tsv, and real jobs on the local cluster."""

from __future__ import annotations

import functools
import json
import operator
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim_consistency.errors import ConfigError
from sim_consistency.launch import (
    JobOutcome,
    LaunchOptions,
    failed_jobs_path,
    launch,
    load_slurm_config,
    read_failed_jobs,
)
from sim_consistency.launch.report import error_tail, update_failed_jobs
from sim_consistency.launch.slurm import make_executor
from sim_consistency.project import ProjectLocation

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def location(tmp_path) -> ProjectLocation:
    return ProjectLocation.resolve(tmp_path / "root").create()


def _slurm(config: str | Path = "debug", **kwargs) -> LaunchOptions:
    return LaunchOptions("slurm", load_slurm_config(config), poll_s=0.3, progress=False, **kwargs)


# -- local -------------------------------------------------------------------------------------


def test_local_runs_every_item_in_order_in_process(location):
    report = launch(functools.partial(operator.mul, 3), [1, 2, 5], stage="t", location=location)
    assert report.results() == [3, 6, 15]
    assert [o.job_id for o in report.outcomes] == ["local"] * 3
    assert report.is_success and report.n_done == 3
    assert not failed_jobs_path(location).exists()


def test_local_stops_at_the_first_error_with_its_message(location):
    seen = []

    def record(item):
        seen.append(item)
        return int(item)

    with pytest.raises(ValueError, match="invalid literal for int"):
        launch(record, ["1", "x", "3"], stage="t", location=location)
    assert seen == ["1", "x"]


def test_items_must_have_unique_labels_and_disjoint_outputs(location, tmp_path):
    with pytest.raises(ConfigError, match=r"share the label\(s\) \['a'\]"):
        launch(str, ["a", "a"], stage="t", location=location)
    shared = tmp_path / "out.h5"
    with pytest.raises(ConfigError, match=r"out.h5: written by two work items \('a' and 'b'\)"):
        launch(str, ["a", "b"], stage="t", location=location, outputs=lambda item: [shared])


def test_options_are_validated():
    with pytest.raises(ConfigError, match="--launcher slurm needs --slurm_config"):
        LaunchOptions("slurm")
    with pytest.raises(ConfigError, match="--no_wait only applies to --launcher slurm"):
        LaunchOptions("local", wait=False)
    with pytest.raises(ConfigError, match="unknown launcher 'pbs'"):
        LaunchOptions("pbs")


# -- failed_jobs.tsv ---------------------------------------------------------------------------


def test_failed_jobs_rows_are_replaced_per_stage_and_item(tmp_path):
    path = tmp_path / "failed_jobs.tsv"
    update_failed_jobs(path, "a", [JobOutcome("m1", "1_0", "done")])
    assert not path.exists()  # nothing failed, nothing written
    update_failed_jobs(
        path,
        "a",
        [JobOutcome("m1", "1_0", "failed", error="Traceback\nValueError: bad\tthing"),
         JobOutcome("m2", "1_1", "failed", error="KeyError: 'x'", log="/l/1_1.err")],
    )  # fmt: skip
    update_failed_jobs(path, "b", [JobOutcome("m1", "2_0", "failed", error="OSError: disk")])
    update_failed_jobs(path, "a", [JobOutcome("m1", "3_0", "done")])  # m1 of stage a fixed
    rows = read_failed_jobs(path)
    assert [(r["stage"], r["work_item"], r["job_id"]) for r in rows] == [
        ("a", "m2", "1_1"),
        ("b", "m1", "2_0"),
    ]
    assert rows[0]["error"] == "KeyError: 'x'" and rows[0]["log"] == "/l/1_1.err"
    assert path.read_text().splitlines()[0] == "stage\tjob_id\twork_item\terror\tlog"


def test_error_tail_keeps_the_traceback_end_of_a_submitit_error():
    message = (
        "Job (task=0) failed during processing with trace:\n----------------------\n"
        "Traceback (most recent call last):\n  File 'x.py', line 1\n    f()\n"
        "ZeroDivisionError: float division by zero\n\n----------------------\n"
        "You can check full logs with 'job.stderr(0)'"
    )
    assert error_tail(message, 2) == "    f()\nZeroDivisionError: float division by zero"
    assert error_tail("one\ntwo\n\nthree", 2) == "two\nthree"


# -- SLURM configs -----------------------------------------------------------------------------


def _config(tmp_path, **entries) -> Path:
    path = tmp_path / "slurm.json"
    path.write_text(json.dumps(entries))
    return path


def test_shipped_slurm_configs_load():
    debug = load_slurm_config("debug")
    assert debug.partition == "debug" and debug.gpus_per_node == 0 and debug.container is None
    gpu = load_slurm_config(REPO / "configs" / "slurm" / "gpu_example.json")
    assert gpu.gpus_per_node == 1 and gpu.constraint == "a100"
    assert gpu.container.python_command(Path("/p/my root")) == (
        "apptainer exec --nv --bind '/p/my root,/shared/datasets' "
        "/shared/images/sim_consistency_latest.sif python"
    )


def test_bad_slurm_configs_name_file_key_and_value(tmp_path):
    path = _config(tmp_path, partiton="debug", cpus_per_task=0, gpus_per_node=True,
                   container={"bind": "/data"})  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_slurm_config(path)
    message = str(info.value)
    assert f"{path}: unknown key 'partiton'; did you mean 'partition'?" in message
    assert f"{path}: cpus_per_task must be a positive integer (got 0)." in message
    assert f"{path}: gpus_per_node must be an integer >= 0 (got True)." in message
    assert f"{path}: container.bind must be a list of strings (got '/data')." in message
    assert f"{path}: missing key 'container.image' (a non-empty string)." in message
    with pytest.raises(FileNotFoundError, match="no file 'nope'.*debug"):
        load_slurm_config("nope")


def test_sbatch_script_carries_resources_environment_and_container(tmp_path):
    if not shutil.which("sbatch"):
        pytest.skip("sbatch is not installed (run .ci/slurm_up.sh)")
    config = load_slurm_config(REPO / "configs" / "slurm" / "gpu_example.json")
    executor = make_executor(config, tmp_path / "%j", project_root=Path("/proj"), job_name="fe")
    # submitit renders the script it would pass to sbatch (private API, the only way offline).
    script = executor._make_submission_file_text(executor._submitit_command_str, "uid")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32768M",
        "#SBATCH --time=240",
        "#SBATCH --constraint=a100",
        "#SBATCH --account=my_project",
        "#SBATCH --qos=normal",
        "#SBATCH --job-name=fe",
        "export HDF5_USE_FILE_LOCKING=FALSE",
    ):
        assert line in script, line
    assert (
        "apptainer exec --nv --bind /proj,/shared/datasets "
        "/shared/images/sim_consistency_latest.sif python -u -m submitit.core._submit"
    ) in script


# -- real jobs on the local SLURM cluster ------------------------------------------------------


@pytest.mark.slurm
@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_others_and_is_listed(slurm_cluster, location):
    divide = functools.partial(operator.truediv, 1.0)
    report = launch(divide, [1.0, 0.0, 4.0], stage="divide", location=location, options=_slurm())
    assert [o.state for o in report.outcomes] == ["done", "failed", "done"]
    assert report.results() == [1.0, 0.25] and not report.is_success
    (row,) = read_failed_jobs(failed_jobs_path(location))
    assert row["stage"] == "divide" and row["work_item"] == "0.0"
    assert row["job_id"] == report.outcomes[1].job_id and "_" in row["job_id"]  # array task
    assert row["error"].endswith("ZeroDivisionError: float division by zero")
    assert Path(row["log"]).is_file()
    assert "FAILED 0.0" in report.summary() and str(failed_jobs_path(location)) in report.summary()

    # The same item succeeding later clears its row.
    fixed = launch(float, [0.0], stage="divide", location=location, options=_slurm())
    assert fixed.results() == [0.0]
    assert read_failed_jobs(failed_jobs_path(location)) == []


@pytest.mark.slurm
@pytest.mark.slow
def test_jobs_run_on_slurm_with_hdf5_file_locking_off(slurm_cluster, location):
    report = launch(
        os.getenv,
        ["HDF5_USE_FILE_LOCKING", "SLURM_JOB_ID", "SLURM_JOB_PARTITION"],
        stage="env",
        location=location,
        options=_slurm(),
    )
    locking, job_id, partition = report.results()
    assert locking == "FALSE" and partition == "debug"
    assert job_id is not None and job_id.isdigit()  # ran inside a SLURM allocation
    script = next((location.logs / "slurm" / "env").rglob("*_submission.sh")).read_text()
    assert "export HDF5_USE_FILE_LOCKING=FALSE" in script and "#SBATCH --partition=debug" in script


def _wait_until_gone(job_id: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True)
        if job_id not in queue.stdout.split():
            return
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still queued after {timeout_s} s")


@pytest.mark.slurm
@pytest.mark.slow
def test_no_wait_returns_at_once_and_running_items_are_not_resubmitted(slurm_cluster, location):
    start = time.monotonic()
    first = launch(time.sleep, [4.0], stage="sleep", location=location, options=_slurm(wait=False))
    assert time.monotonic() - start < 4.0
    (submitted,) = first.outcomes
    assert submitted.state == "submitted" and "job ids" in first.summary()

    again = launch(time.sleep, [4.0], stage="sleep", location=location, options=_slurm())
    (skipped,) = again.outcomes
    assert skipped.state == "skipped_running" and skipped.job_id == submitted.job_id
    assert "still running from an earlier launch" in again.summary()

    _wait_until_gone(submitted.job_id)
    third = launch(time.sleep, [4.0], stage="sleep", location=location, options=_slurm())
    assert third.outcomes[0].state == "done" and third.outcomes[0].job_id != submitted.job_id


@pytest.mark.slurm
def test_container_settings_run_the_job_python_through_apptainer(slurm_cluster, location, tmp_path):
    # Apptainer cannot be installed here: a stand-in records its arguments and runs Python.
    calls = tmp_path / "apptainer_calls.txt"
    shim = tmp_path / "apptainer"
    shim.write_text(
        "#!/bin/bash\n"
        f'echo "$@" >> {calls}\n'
        '[ "$1" = exec ] || exit 99\n'
        "shift 5\n"  # exec --nv --bind <binds> <image>
        '[ "$1" = python ] || exit 98\n'
        "shift\n"
        f'exec {sys.executable} "$@"\n'
    )
    shim.chmod(0o755)
    config = _config(
        tmp_path,
        partition="debug",
        mem_gb=1,
        container={"image": "/images/simc.sif", "bind": ["/data"], "apptainer": str(shim)},
    )
    report = launch(
        functools.partial(operator.add, 1), [1, 2], stage="c", location=location,
        options=_slurm(config),
    )  # fmt: skip
    assert report.results() == [2, 3]
    lines = calls.read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert line.startswith(
            f"exec --nv --bind {location.root},/data /images/simc.sif python -u -m "
            "submitit.core._submit"
        )


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--launcher", "slurm"], "--launcher slurm needs --slurm_config"),
        (["--no_wait"], "--no_wait only applies to --launcher slurm"),
        (["--launcher", "slurm", "--slurm_config", "nope"], "--slurm_config: no file 'nope'"),
    ],
)
def test_stage_flags_are_checked_before_any_work(location, tmp_path, capsys, extra, fragment):
    from sim_consistency.stages import feature_extraction

    config = tmp_path / "models.json"
    config.write_text(json.dumps({"rn": {"source": "timm", "model_name": "test_resnet"}}))
    argv = ["--project_root", str(location.root), "--models_config", str(config), *extra]
    assert feature_extraction.main(argv) == 2
    assert fragment in capsys.readouterr().err
    assert not list(location.features.rglob("*")) and not list(location.logs.rglob("*"))


@pytest.mark.slurm
def test_sbatch_refusal_names_the_config(slurm_cluster, location, tmp_path):
    config = _config(tmp_path, partition="no_such_partition")
    with pytest.raises(ConfigError, match=r"slurm.json: sbatch refused the jobs .*partition"):
        launch(float, [1.0], stage="bad", location=location, options=_slurm(config))
    assert not failed_jobs_path(location).exists()
