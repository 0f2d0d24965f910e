"""Benchmark: torch's default thread count vs the stages' rule on a shared, contended node.

The situation of issue 25: a SLURM job given ``--cpus-per-task k`` on a node without core
binding (the process may run on every core, so torch's default is one thread per core) while
other jobs keep the remaining cores busy. The stages' rule
(:func:`sim_consistency.threads.resolve_num_threads`) takes ``SLURM_CPUS_PER_TASK`` = k instead.

Two CPU workloads the stages run — a forward pass of timm ``test_resnet`` (feature extraction,
batch 256 of 32×32 images) and float64 cross-covariance matmuls (CKA / probes, 4,000 × 512) —
are timed with torch's default count and with the rule's (``--cpus_per_task``, default 1),
under

* ``no extra load``: only what the machine already runs (the load average is printed), and
* ``contended``: ``--busy`` spinning processes (default: one per CPU not given to the job),
  standing for the node's other jobs.

Each timing repeats the workload for at least ``--min_s`` seconds (time per call); the two
counts are interleaved and the median of ``--repeats`` is kept, so a change of load on the
machine hits both alike. Ratio = default time / rule time (> 1: the rule is faster).

    python benchmarks/threads.py [--repeats 9] [--cpus_per_task 1] [--busy N] [--min_s 0.3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

import torch

from sim_consistency.threads import available_cpus, resolve_num_threads


def _spin(stop) -> None:  # a busy competitor
    x = 0
    while not stop.is_set():
        x += 1


def _workloads():
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=10).eval()
    images = torch.randn(256, 3, 32, 32)
    X = torch.randn(4000, 512, dtype=torch.float64)
    Y = torch.randn(4000, 512, dtype=torch.float64)

    def forward() -> None:
        with torch.inference_mode():
            model(images)

    def matmul() -> None:
        for _ in range(4):
            X.T @ Y

    return {"test_resnet forward": forward, "float64 X^T Y": matmul}


def _time(fn, n_threads: int, min_s: float) -> float:
    """Return seconds per call of ``fn`` at ``n_threads``, repeated for at least ``min_s``."""
    torch.set_num_threads(n_threads)
    fn()  # warm-up at this thread count
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_s:
            return elapsed / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--cpus_per_task", type=int, default=1)
    parser.add_argument("--busy", type=int, default=None, help="competitors (default: the rest)")
    parser.add_argument("--min_s", type=float, default=0.3)
    args = parser.parse_args()
    cpus = available_cpus()
    default = torch.get_num_threads()
    rule = resolve_num_threads(None, {"SLURM_CPUS_PER_TASK": str(args.cpus_per_task)})
    counts = {"default": default, "rule": rule.n_threads}
    busy_n = args.busy if args.busy is not None else max(1, cpus - rule.n_threads)
    workloads = _workloads()
    print(
        f"torch {torch.__version__}; {cpus} CPUs available; torch default {default} threads; "
        f"rule with SLURM_CPUS_PER_TASK={args.cpus_per_task}: {rule.n_threads} "
        f"({rule.source}); median of {args.repeats}, interleaved; load average before: "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print("\n| condition | workload | default s/call | rule s/call | default / rule |")
    print("|---|---|---:|---:|---:|")
    for condition in ("no extra load", "contended"):
        stop = mp.Event()
        busy = []
        if condition == "contended":
            busy = [mp.Process(target=_spin, args=(stop,)) for _ in range(busy_n)]
            for p in busy:
                p.start()
            time.sleep(0.5)
        try:
            times: dict[tuple[str, str], list[float]] = {
                (w, c): [] for w in workloads for c in counts
            }
            for _ in range(args.repeats):
                for w, fn in workloads.items():
                    for c, n in counts.items():
                        times[(w, c)].append(_time(fn, n, args.min_s))
        finally:
            stop.set()
            for p in busy:
                p.join()
        label = condition + (f" ({len(busy)} spinning)" if busy else "")
        for w in workloads:
            d = statistics.median(times[(w, "default")])
            r = statistics.median(times[(w, "rule")])
            print(f"| {label} | {w} | {d:.4f} | {r:.4f} | **{d / r:.2f}×** |")


if __name__ == "__main__":
    main()
