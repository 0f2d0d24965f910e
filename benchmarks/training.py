"""Benchmark: one fine-tuning epoch of the demo's models, our loop vs a textbook baseline.

Same model (timm ``test_resnet`` at 16 px, ``test_vit`` at 32 px, as in ``DEMO_STUDY``), same
digits train split (1,078 rows), same optimiser, batch 64, one process, interleaved best-of-N:

  (a) baseline: a ``DataLoader`` over the webdataset rows that decodes and transforms every image
      every epoch, torch's default thread count (2 on the build machine);
  (b) the same loop on rows preprocessed once (no decoding), still default threads;
  (c) ours: :func:`sim_consistency.training.fit` as the stage runs it — rows preprocessed once,
      one intra-op thread (:func:`~sim_consistency.training.deterministic`), plus its held-out
      bookkeeping (train loss/accuracy accumulation).

Prints epoch seconds and the ratios (a)/(c) and (b)/(c) (> 1: ours is faster).

    uv run python benchmarks/training.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim_consistency.data import collate_samples, load_dataset  # noqa: E402
from sim_consistency.models import create_model  # noqa: E402
from sim_consistency.project import ProjectLocation  # noqa: E402
from sim_consistency.training import (  # noqa: E402
    DEMO_STUDY,
    FitOptions,
    arch_specs,
    fit,
    load_training_data,
    torch_threads,
)


def baseline_epoch(model, dataset, options: FitOptions) -> None:
    """One epoch the textbook way: DataLoader decoding + transforming every row, default threads."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=options.batch_size,
        shuffle=True,
        collate_fn=collate_samples,
        generator=torch.Generator().manual_seed(options.seed),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr)
    model.train()
    for batch in loader:
        loss = F.cross_entropy(model(batch.image), batch.label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def preprocessed_epoch(model, images, labels, options: FitOptions) -> None:
    """One epoch over rows preprocessed once, default threads (isolates the thread effect)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr)
    model.train()
    order = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(options.seed))
    for rows in torch.split(order, options.batch_size):
        loss = F.cross_entropy(model(images[rows]), labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def bench_arch(arch_id: str, specs, location: ProjectLocation, repeats: int) -> str:
    """Best epoch seconds of (a), (b), (c) for one architecture, as a markdown table row."""
    options = FitOptions(epochs=1, lr=1e-3, schedule="cosine", seed=0, batch_size=64)
    with torch_threads(1):
        loaded = create_model(specs[arch_id], specs, location=location)
    data = load_training_data(DEMO_STUDY.dataset, loaded.transform, location=location)
    rows = load_dataset(DEMO_STUDY.dataset, "train", location=location, transform=loaded.transform)
    model = loaded.model
    contenders = {
        "a": lambda: baseline_epoch(model, rows, options),
        "b": lambda: preprocessed_epoch(model, data.train.images, data.train.labels, options),
        "c": lambda: fit(model, data.train, options, progress=False),
    }
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(repeats):  # interleaved: drift of the shared machine hits all alike
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    size = loaded.preprocessing["input_size"][1]
    return (
        f"| {arch_id} ({size} px) | {best['a']:.2f} | {best['b']:.2f} | {best['c']:.2f} "
        f"| **{best['a'] / best['c']:.1f}** | {best['b'] / best['c']:.1f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    location = ProjectLocation.resolve(tempfile.mkdtemp(prefix="simc_bench_training_"))
    specs = arch_specs(DEMO_STUDY)
    print(f"torch {torch.__version__}, default threads {torch.get_num_threads()}")
    print(
        "| model | (a) baseline s/epoch | (b) preprocessed, default threads | (c) ours "
        "| **(a)/(c)** | (b)/(c) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for arch_id in specs:
        print(bench_arch(arch_id, specs, location, args.repeats), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
