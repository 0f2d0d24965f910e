"""Benchmark: feature-extraction throughput and memory (issue: feature cache).

Same model, same pre-decoded batches, one process, run side by side:

  (a) bare forward pass (no hooks, no I/O)
  (b) our extraction path: forward hooks, in-hook pooling, HDF5 writes (FeatureCacheWriter)
  (c) naive baseline in the style of thingsvision: keep every block's full output, concatenate,
      ``np.save`` per block, pool afterwards

and prints (b)/(a) and (b)/(c). Then end-to-end images/s from the digits webdataset shards
(decode + transform included) vs loader-only and model-only rates (which one bounds the run),
and peak RSS of whole extraction runs on 1x and 8x the images (subprocesses).

    uv run python benchmarks/extraction.py                     # CPU, default models
    uv run python benchmarks/extraction.py --device cuda --batch_size 128
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim_consistency.features import BlockExtractor, FeatureCacheWriter, write_features  # noqa: E402
from sim_consistency.io import atomic_output  # noqa: E402
from sim_consistency.stages.feature_extraction import block_specs  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _best_times(fns: dict, device: torch.device, repeats: int) -> dict[str, float]:
    """Best wall time of each function over ``repeats`` rounds, run interleaved (a, b, c, a, …)
    so that drift of the machine's speed hits every contender alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def bench_model(
    name: str, *, device: torch.device, batch_size: int, n_batches: int, repeats: int
) -> dict:
    from sim_consistency.config import parse_models_config
    from sim_consistency.models import create_model

    torch.manual_seed(0)
    specs = parse_models_config({"m": {"source": "timm", "model_name": name}})
    loaded = create_model(specs["m"], specs, device=device)
    model = loaded.model
    size = loaded.preprocessing["input_size"]
    batches = [torch.randn(batch_size, *size, device=device) for _ in range(n_batches)]
    names = loaded.block_names
    specs = block_specs(loaded)
    n_classes = loaded.n_classes
    dims = {i.name: i.dim for i in loaded.blocks}
    n_images = batch_size * n_batches

    def bare() -> None:
        with torch.inference_mode():
            for x in batches:
                model(x)

    def ours() -> None:
        with tempfile.TemporaryDirectory() as tmp, atomic_output(Path(tmp) / "f.h5") as path:
            writer = FeatureCacheWriter(path, block_dims=dims, n_classes=n_classes)
            with BlockExtractor(model, specs, with_logits=True) as extractor:
                labels = np.zeros(batch_size, np.int64)
                write_features(
                    extractor,
                    (
                        ([f"k{b}_{i}" for i in range(len(x))], labels, x)
                        for b, x in enumerate(batches)
                    ),
                    writer,
                    device=device,
                )
            writer.finalize({"model_id": name})

    def naive() -> None:
        modules = dict(model.named_modules())
        store: dict[str, list[np.ndarray]] = {n: [] for n in names}
        hooks = [
            modules[n].register_forward_hook(
                lambda _m, _i, out, n=n: store[n].append(out.detach().cpu().numpy())
            )
            for n in names
        ]
        try:
            with torch.inference_mode():
                for x in batches:
                    model(x)
        finally:
            for h in hooks:
                h.remove()
        with tempfile.TemporaryDirectory() as tmp:
            for spec in specs:
                full = np.concatenate(store[spec.name])
                np.save(Path(tmp) / f"{spec.name}.npy", full)
                if spec.layout == "nchw":
                    full.mean(axis=(2, 3))
                elif spec.pooling == "cls":
                    full[:, 0]
                else:
                    full.mean(axis=1)

    bare()  # warm-up (allocator, kernels)
    times = _best_times({"bare": bare, "ours": ours, "naive": naive}, device, repeats)
    t_bare, t_ours, t_naive = times["bare"], times["ours"], times["naive"]
    return {
        "model": name,
        "input_size": list(size),
        "n_blocks": len(names),
        "images": n_images,
        "bare_img_s": n_images / t_bare,
        "ours_img_s": n_images / t_ours,
        "naive_img_s": n_images / t_naive,
        "ours_over_bare": t_bare / t_ours,
        "ours_over_naive": t_naive / t_ours,
    }


def bench_end_to_end(
    model_name: str, *, device: torch.device, batch_size: int, num_workers: int, root: Path
) -> dict:
    """images/s from digits shards: loader only, model only, and the whole extraction."""
    from sim_consistency.config import parse_models_config
    from sim_consistency.data import collate_samples, load_dataset
    from sim_consistency.models import create_model
    from sim_consistency.project import ProjectLocation
    from sim_consistency.stages.feature_extraction import ExtractionSettings, run_model

    location = ProjectLocation.resolve(root).create()
    config = root / "models.json"
    raw = {"m": {"source": "timm", "model_name": model_name, "pretrained": False}}
    config.write_text(json.dumps(raw))
    specs = parse_models_config(raw)
    loaded = create_model(specs["m"], specs, device=device, location=location)
    data = load_dataset("wds/digits", "train", location=location, transform=loaded.transform)
    loader = torch.utils.data.DataLoader(
        data, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_samples
    )
    start = time.perf_counter()
    batches = [b.image for b in loader]
    t_loader = time.perf_counter() - start
    start = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            loaded.model(x.to(device))
    _sync(device)
    t_model = time.perf_counter() - start
    settings = ExtractionSettings(
        project_root=location.root,
        models_config=config,
        model_ids=("m",),
        datasets=("wds/digits",),
        splits=("train",),
        batch_size=batch_size,
        num_workers=num_workers,
        device=str(device),
        force=True,
    )
    start = time.perf_counter()
    run_model(settings, "m", progress=False)
    t_total = time.perf_counter() - start
    n = len(data)
    return {
        "model": model_name,
        "images": n,
        "num_workers": num_workers,
        "loader_img_s": n / t_loader,
        "model_img_s": n / t_model,
        "end_to_end_img_s": n / t_total,
        "bottleneck": "loader" if t_loader > t_model else "model",
    }


_RSS_CHILD = """
import json, resource, sys
from sim_consistency.stages import feature_extraction
code = feature_extraction.main(sys.argv[1:])
print(json.dumps({"code": code, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def bench_peak_rss(model_name: str, *, root: Path, n_small: int) -> dict:
    """Peak RSS of a whole extraction run on n and 8n images (separate processes)."""
    config = root / "rss_models.json"
    config.write_text(json.dumps({"m": {"source": "timm", "model_name": model_name}}))
    out = {"model": model_name}
    for factor in (1, 8):
        n = n_small * factor
        proj = root / f"rss_{factor}"
        os.makedirs(proj / "datasets" / "wds", exist_ok=True)
        link = proj / "datasets" / "wds" / "wds_digits"
        if not link.exists():
            os.symlink(root / "datasets" / "wds" / "wds_digits", link)
        args = [
            "--project_root",
            str(proj),
            "--models_config",
            str(config),
            "--datasets",
            "wds/digits",
            "--splits",
            "train",
            "--max_samples",
            str(n),
            "--num_workers",
            "0",
            "--batch_size",
            "32",
            "--device",
            "cpu",
        ]
        res = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, *args],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        info = json.loads(res.stdout.strip().splitlines()[-1])
        out[f"images_{factor}x"] = n
        out[f"peak_rss_mb_{factor}x"] = info["maxrss_kb"] / 1024
    out["rss_ratio_8x_over_1x"] = out["peak_rss_mb_8x"] / out["peak_rss_mb_1x"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["convnext_atto", "vit_tiny_patch16_224"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--n_batches", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--skip_rss", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"# device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"batch={args.batch_size} batches={args.n_batches}"
    )
    print("model                      bare img/s  ours img/s  naive img/s  ours/bare  ours/naive")
    for name in args.models:
        r = bench_model(
            name,
            device=device,
            batch_size=args.batch_size,
            n_batches=args.n_batches,
            repeats=args.repeats,
        )
        print(
            f"{r['model']:<26} {r['bare_img_s']:>10.1f} {r['ours_img_s']:>11.1f} "
            f"{r['naive_img_s']:>12.1f} {r['ours_over_bare']:>10.3f} {r['ours_over_naive']:>11.2f}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        from sim_consistency.data import build_digits
        from sim_consistency.project import ProjectLocation

        build_digits(ProjectLocation.resolve(root))
        print("\n# end to end from wds/digits train shards (PNG decode + resize + extraction)")
        print(
            "model                      workers  loader img/s  model img/s  end-to-end img/s  bound by"
        )
        for name in args.models:
            r = bench_end_to_end(
                name,
                device=device,
                batch_size=args.batch_size,
                num_workers=args.num_workers,
                root=root,
            )
            print(
                f"{r['model']:<26} {r['num_workers']:>7} {r['loader_img_s']:>13.1f} "
                f"{r['model_img_s']:>12.1f} {r['end_to_end_img_s']:>17.1f}  {r['bottleneck']}"
            )
        if not args.skip_rss:
            print("\n# peak RSS of a whole extraction run (subprocess), 1x vs 8x the images")
            r = bench_peak_rss(args.models[0], root=root, n_small=100)
            print(
                f"{r['model']}: {r['images_1x']} images -> {r['peak_rss_mb_1x']:.0f} MB, "
                f"{r['images_8x']} images -> {r['peak_rss_mb_8x']:.0f} MB "
                f"(ratio {r['rss_ratio_8x_over_1x']:.3f})"
            )
    _ = resource  # RSS read in the child processes
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
