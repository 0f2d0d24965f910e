"""Benchmark: uniform-soup memory/time and the MonoSoup spectral path (issue: model variants).

(1) Uniform soup of 8 and of 32 ``vit_small_patch16_224``-sized state dicts (22M parameters,
    88 MB each in float32; shapes from timm, values uniform in ±0.02, ingredient ``i`` = the
    base weights scaled by ``1 + 1e-3·i``, produced one at a time by a generator as a loader
    would):

    * ours — :func:`sim_consistency.merging.uniform_soup` streaming the generator (float64
      accumulator + one ingredient);
    * baseline — hold every ingredient, then ``torch.stack(...).mean(0)`` per tensor.

    Reports wall time and peak RSS above the starting RSS (sampled every 2 ms in a thread), and
    the 32/8 memory ratio: ours must stay flat, the baseline grows with the count.

(2) MonoSoup's spectral path on ``convnext_tiny``-sized weights (every ≥2-d tensor, conv
    kernels flattened; ΔW = seeded Gaussian, full rank):

    * ours — :func:`sim_consistency.merging.monosoup.spectral_split`: ``eigh`` of the smaller
      float64 Gram matrix + projection;
    * baseline — a plain per-layer ``torch.linalg.svd(ΔW, full_matrices=False)`` loop (float64,
      same precision; and float32, what reference code usually runs) + ``U_k Σ_k V_kᵀ``.

    Both run under the same thread policy; k is checked equal on every layer and ΔW_high to
    agree to 1e-9 relative. Also the end-to-end :func:`monosoup` time (three state dicts +
    statistics).

All contenders run interleaved in one process, best of ``--repeats``.

    uv run python benchmarks/merging.py                # ~2-4 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim_consistency.merging import monosoup, select_rank, uniform_soup  # noqa: E402
from sim_consistency.merging.monosoup import _lapack_threads, spectral_split  # noqa: E402

_PAGE = os.sysconf("SC_PAGE_SIZE")
_LIBC = ctypes.CDLL("libc.so.6")
# Serve every allocation over 128 KiB by mmap (no dynamic threshold), so freed tensors go back
# to the OS and the RSS of one run does not hide inside the next run's peak.
_LIBC.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 2 ms in a thread."""

    def __enter__(self) -> PeakRSS:
        _LIBC.malloc_trim(0)
        self.start = _rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def mb(self) -> float:
        return (self.peak - self.start) / 2**20


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    with PeakRSS() as mem:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
        del result
    return seconds, mem.mb


def _ingredients(base: dict[str, torch.Tensor], n: int) -> Iterator[tuple[str, dict]]:
    for i in range(n):
        yield f"ft{i}", {k: v * (1 + 1e-3 * i) for k, v in base.items()}


def _stack_mean(base: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    held = [sd for _, sd in _ingredients(base, n)]
    return {k: torch.stack([sd[k] for sd in held]).mean(0) for k in base}


def _random_weights(model_name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with ``model_name``'s keys and shapes, uniform in ±0.02 (fast to build)."""
    import timm

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in timm.create_model(model_name).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    return {k: torch.empty(shape).uniform_(-0.02, 0.02, generator=g) for k, shape in shapes.items()}


def bench_soups(repeats: int) -> list[dict]:
    base = _random_weights("vit_small_patch16_224")
    n_params = sum(v.numel() for v in base.values())
    rows = []
    for n in (8, 32):
        best = {"ours": (math.inf, math.inf), "baseline": (math.inf, math.inf)}
        for _ in range(repeats):
            for name, fn in (
                ("ours", lambda n=n: uniform_soup(_ingredients(base, n))),
                ("baseline", lambda n=n: _stack_mean(base, n)),
            ):
                seconds, mb = _timed(fn)
                print(f"  soup of {n}, {name}: {seconds:.2f} s, {mb:.0f} MB", flush=True)
                best[name] = (min(best[name][0], seconds), min(best[name][1], mb))
        # Same numbers: the soups agree to float32 rounding.
        ours, ref = uniform_soup(_ingredients(base, n)), _stack_mean(base, n)
        err = max(float((ours[k] - ref[k]).abs().max()) for k in base)
        rows.append({"n": n, "params_M": n_params / 1e6, "max_abs_diff": err, **best})
        del ours, ref
    return rows


def _svd_path(matrix: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    U, S, Vh = torch.linalg.svd(matrix.to(dtype), full_matrices=False)
    k = select_rank(S, "vetterli")
    return ((U[:, :k] * S[:k]) @ Vh[:k]).double(), k


def bench_monosoup(repeats: int) -> dict:
    w0 = _random_weights("convnext_tiny")
    g = torch.Generator().manual_seed(1)
    w1 = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in w0.items()}
    deltas = [
        (w1[k].double() - w0[k].double()).reshape(v.shape[0], -1)
        for k, v in w0.items()
        if v.ndim >= 2
    ]

    def run(path: Callable[[torch.Tensor], tuple]) -> list:
        out = []
        for d in deltas:
            with _lapack_threads(d):  # the same thread policy for every contender
                out.append(path(d))
        return out

    contenders = {
        "ours (eigh of Gram, f64)": lambda: run(lambda d: spectral_split(d)[1:]),
        "svd loop f64": lambda: run(lambda d: _svd_path(d, torch.float64)),
        "svd loop f32": lambda: run(lambda d: _svd_path(d, torch.float32)),
        "monosoup() end to end": lambda: monosoup(w0, w1),
    }
    best = dict.fromkeys(contenders, math.inf)
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            seconds = time.perf_counter() - start
            print(f"  monosoup path, {name}: {seconds:.2f} s", flush=True)
            best[name] = min(best[name], seconds)
    ours = contenders["ours (eigh of Gram, f64)"]()
    ref = contenders["svd loop f64"]()
    same_k = all(a[1] == b[1] for a, b in zip(ours, ref, strict=True))
    rel = max(float((a[0] - b[0]).norm() / b[0].norm()) for a, b in zip(ours, ref, strict=True))
    return {
        "n_matrices": len(deltas),
        "params_M": sum(d.numel() for d in deltas) / 1e6,
        "largest": max(tuple(d.shape) for d in deltas),
        "best_s": best,
        "same_k": same_k,
        "max_rel_diff_high": rel,
    }


def _report_soups(rows: list[dict]) -> None:
    print(
        "\n| ingredients | ours s | ours peak MB | baseline s | baseline peak MB | "
        "time baseline/ours | memory baseline/ours |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        (ts, ms), (tb, mb) = r["ours"], r["baseline"]
        print(
            f"| {r['n']} | {ts:.2f} | {ms:.0f} | {tb:.2f} | {mb:.0f} | {tb / ts:.2f} | "
            f"{mb / ms:.1f} |"
        )
    small, large = rows
    print(
        f"\nparameters per ingredient: {rows[0]['params_M']:.1f}M; peak memory 32/8: ours "
        f"{large['ours'][1] / small['ours'][1]:.2f}, baseline "
        f"{large['baseline'][1] / small['baseline'][1]:.2f}; max |ours - baseline| "
        f"{max(r['max_abs_diff'] for r in rows):.1e}"
    )


def _report_monosoup(mono: dict) -> None:
    print(
        f"\nMonoSoup path on convnext_tiny: {mono['n_matrices']} matrices, "
        f"{mono['params_M']:.1f}M entries, largest {mono['largest']}"
    )
    base = mono["best_s"]["ours (eigh of Gram, f64)"]
    print("| path | best s | ratio to ours |")
    print("|---|---:|---:|")
    for name, seconds in mono["best_s"].items():
        print(f"| {name} | {seconds:.2f} | {seconds / base:.2f} |")
    print(
        f"same k on every layer: {mono['same_k']}; max relative difference of ΔW_high vs "
        f"the f64 SVD: {mono['max_rel_diff_high']:.1e}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["soups", "monosoup"], default=None)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice)"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    if args.only != "monosoup":
        _report_soups(bench_soups(args.repeats))
    if args.only != "soups":
        _report_monosoup(bench_monosoup(args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
