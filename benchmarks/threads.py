"""Benchmark: torch intra-op thread count on a contended CPU (what ``--num_threads`` decides).

Two CPU workloads the stages run — a forward pass of timm ``test_resnet`` (feature extraction,
batch 256 of 32×32 images) and float64 cross-covariance matmuls (CKA / probes, 4,000 × 512) —
timed in one process under

* ``idle``: nothing else running (beyond whatever the machine already has), and
* ``contended``: ``--busy`` spinning processes (default: one per CPU this process may use),
  like the other jobs of a shared node,

with thread counts ``1``, the stages' rule (:func:`sim_consistency.threads.resolve_num_threads`:
``SLURM_CPUS_PER_TASK``, else the CPU affinity) and ``oversubscribed`` (``--oversubscribe`` ×
the affinity, standing for torch's default of one thread per core of a large node when the job
was given fewer CPUs). Configurations are interleaved and the median of ``--repeats`` kept, so a
change of load on the machine hits every configuration alike.

    python benchmarks/threads.py [--repeats 7] [--busy N] [--oversubscribe 4]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
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


def _time(fn, n_threads: int) -> float:
    torch.set_num_threads(n_threads)
    fn()  # warm-up at this thread count
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--busy", type=int, default=None, help="competitors (default: #CPUs)")
    parser.add_argument("--oversubscribe", type=int, default=4)
    args = parser.parse_args()
    cpus = available_cpus()
    rule = resolve_num_threads()
    counts = {
        "1 thread": 1,
        f"stages' rule ({rule.n_threads}, {rule.source})": rule.n_threads,
        f"oversubscribed ({args.oversubscribe * cpus})": args.oversubscribe * cpus,
    }
    workloads = _workloads()
    print(f"torch {torch.__version__}, {cpus} CPUs available, torch default "
          f"{torch.get_num_threads()} threads; median of {args.repeats}, interleaved")  # fmt: skip
    for condition in ("idle", "contended"):
        stop = mp.Event()
        busy = []
        if condition == "contended":
            busy = [mp.Process(target=_spin, args=(stop,)) for _ in range(args.busy or cpus)]
            for p in busy:
                p.start()
            time.sleep(0.5)
        try:
            times = {(w, c): [] for w in workloads for c in counts}
            for _ in range(args.repeats):
                for w, fn in workloads.items():
                    for c, n in counts.items():
                        times[(w, c)].append(_time(fn, n))
        finally:
            stop.set()
            for p in busy:
                p.join()
        print(f"\n### {condition}" + (f" ({len(busy)} spinning processes)" if busy else ""))
        print("| workload | threads | median s | vs 1 thread |")
        print("|---|---|---:|---:|")
        for w in workloads:
            one = statistics.median(times[(w, "1 thread")])
            for c in counts:
                med = statistics.median(times[(w, c)])
                print(f"| {w} | {c} | {med:.3f} | {med / one:.2f}× |")


if __name__ == "__main__":
    main()
