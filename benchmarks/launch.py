"""Launcher overhead: our job-array launch vs one submitit job per item, and local vs a loop.

Side by side in one process, interleaved, best of ``--repeats``:

* SLURM submit: ``sim_consistency.launch`` (one ``sbatch`` for a job array of N tasks) vs the
  common baseline, ``executor.submit`` once per item (N ``sbatch`` calls). Time until every job
  id is known.
* SLURM round trip: submit + wait for N trivial jobs (``float(i)``) and collect the results:
  ``launch(..., wait=True)`` vs per-item ``submit`` + ``job.result()``.
* Local: ``launch`` with the local launcher vs a bare ``[fn(x) for x in items]`` loop over
  ``--n_local`` items whose work is a 64x64 float64 matrix product; reported as the ratio and
  the launcher's added microseconds per item.

Needs the local test cluster for the SLURM rows (``sudo .ci/slurm_up.sh``)::

    python benchmarks/launch.py --n_items 16 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from sim_consistency.launch import LaunchOptions, launch, load_slurm_config  # noqa: E402
from sim_consistency.launch.slurm import JobCall, make_executor  # noqa: E402
from sim_consistency.project import ProjectLocation  # noqa: E402


def _work(x: np.ndarray) -> float:
    return float((x @ x).sum())


def _wait_for_queue_empty() -> None:
    import subprocess

    while subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip():
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n_items", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n_local", type=int, default=20000)
    args = parser.parse_args()
    config = load_slurm_config("debug")
    items = [float(i) for i in range(args.n_items)]
    best: dict[str, float] = {}

    def record(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, float("inf")), seconds)

    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            location = ProjectLocation.resolve(Path(tmp) / f"r{repeat}").create()
            # -- submit only ------------------------------------------------------------------
            executor = make_executor(
                config, location.logs / "base" / "%j", project_root=location.root, job_name="b"
            )
            start = time.perf_counter()
            jobs = [executor.submit(JobCall(float), x) for x in items]
            record("submit: baseline (1 sbatch per item)", time.perf_counter() - start)
            [job.result() for job in jobs]
            _wait_for_queue_empty()
            start = time.perf_counter()
            report = launch(
                float, items, stage="submit", location=location,
                options=LaunchOptions("slurm", config, wait=False, progress=False),
            )  # fmt: skip
            record("submit: ours (1 job array)", time.perf_counter() - start)
            assert report.n_submitted == len(items)
            _wait_for_queue_empty()
            # -- round trip -------------------------------------------------------------------
            start = time.perf_counter()
            jobs = [executor.submit(JobCall(float), x) for x in items]
            results = [job.result() for job in jobs]
            record("round trip: baseline (submit + result)", time.perf_counter() - start)
            assert results == items
            start = time.perf_counter()
            report = launch(
                float, items, stage="trip", location=location,
                options=LaunchOptions("slurm", config, progress=False, poll_s=0.5),
            )  # fmt: skip
            record("round trip: ours (launch, wait)", time.perf_counter() - start)
            assert report.results() == items
            # -- local ------------------------------------------------------------------------
            many = [np.full((64, 64), i, dtype=np.float64) for i in range(args.n_local)]
            start = time.perf_counter()
            [_work(x) for x in many]
            record("local: bare loop", time.perf_counter() - start)
            start = time.perf_counter()
            launch(
                _work, many, stage="local", location=location,
                options=LaunchOptions(progress=False), label=lambda x: str(id(x)),
            )  # fmt: skip
            record("local: ours (launch)", time.perf_counter() - start)

    print(f"n_items={args.n_items} (SLURM), n_local={args.n_local}, best of {args.repeats}")
    print("| measure | baseline s | ours s | baseline/ours |")
    print("|---|---:|---:|---:|")
    for kind, base, ours in (
        ("submit", "submit: baseline (1 sbatch per item)", "submit: ours (1 job array)"),
        ("round trip", "round trip: baseline (submit + result)", "round trip: ours (launch, wait)"),
        ("local", "local: bare loop", "local: ours (launch)"),
    ):
        print(f"| {kind} | {best[base]:.3f} | {best[ours]:.3f} | {best[base] / best[ours]:.2f} |")
    added = (best["local: ours (launch)"] - best["local: bare loop"]) / args.n_local * 1e6
    print(f"local launcher adds {added:.1f} us per item")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
