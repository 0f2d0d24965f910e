"""Benchmark: feature-extraction throughput and memory (issue: feature cache).

Same model, same pre-decoded batches, one process, run side by side:

  (a) bare forward pass (no hooks, no I/O)
  (b) our extraction path: forward hooks, in-hook pooling, HDF5 writes (FeatureCacheWriter)
  (c) naive baseline in the style of thingsvision: keep every block's full output, concatenate,
      ``np.save`` per block, pool afterwards

and prints (b)/(a) and (b)/(c). Then end-to-end images/s from the digits webdataset shards
(decode + transform included) vs loader-only and model-only rates (which one bounds the run),
and peak RSS of whole extraction runs on 1x and 8x the images (subprocesses).

Integrity costs (issue: a cache is complete only if verified; its key covers the data), as a
share of an end-to-end extraction of a JPEG webdataset of realistic size: the content digest
of every row's key, label and image bytes (:meth:`ImageDataset.content_digest`, run by the
planner), and the checksummed writer (fletcher32, flush per batch, read-back verification
before ``complete=True``) vs plain HDF5 writes of the same arrays.

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
from sim_consistency.features.pipeline import block_specs  # noqa: E402
from sim_consistency.io import atomic_output  # noqa: E402


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
            writer.finalize({"model_id": name, "content_key": "benchmark"})

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


def _jpeg_dataset(
    root: Path, name: str, n_images: int, size: int, *, n_shards: int = 1, quality: int = 95
) -> str:
    """Write ``wds/<name>`` (train split, ``n_shards`` shards) of ``n_images`` random JPEGs.

    Smoothed noise at quality 95: larger files than natural photos of the same size, so the
    digest's share is an upper bound. Returns the dataset name.
    """
    folder = root / "datasets" / "wds" / f"wds_{name}"
    (folder / "train").mkdir(parents=True, exist_ok=True)
    (folder / "classnames.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    (folder / "train" / "nshards.txt").write_text(f"{n_shards}\n")
    rng = np.random.default_rng(0)
    per_shard = -(-n_images // n_shards)
    for shard in range(n_shards):
        _jpeg_shard(
            folder / "train" / f"{shard}.tar",
            rng,
            size,
            quality,
            range(shard * per_shard, min(n_images, (shard + 1) * per_shard)),
        )
    return f"wds/{name}"


def _jpeg_shard(path: Path, rng: np.random.Generator, size: int, quality: int, keys: range) -> None:
    import io
    import tarfile

    from PIL import Image

    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in keys:
            coarse = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((size, size), Image.BILINEAR)
            noisy = np.asarray(image, np.int16) + rng.integers(-12, 13, (size, size, 3))
            out = io.BytesIO()
            Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(out, "JPEG", quality=quality)
            for ext, payload in (("jpg", out.getvalue()), ("cls", str(i % 10).encode())):
                info = tarfile.TarInfo(f"s{i:07d}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


def bench_integrity(
    model_name: str,
    *,
    device: torch.device,
    batch_size: int,
    num_workers: int,
    root: Path,
    n_images: int,
    image_size: int,
) -> dict:
    """Share of an end-to-end extraction spent on the content digest and on checksummed writes."""
    import h5py

    from sim_consistency.data import load_dataset
    from sim_consistency.features import open_cache
    from sim_consistency.project import ProjectLocation
    from sim_consistency.stages.feature_extraction import ExtractionSettings, run_model

    location = ProjectLocation.resolve(root).create()
    dataset = _jpeg_dataset(location.root, "jpeg_bench", n_images, image_size)
    data = load_dataset(dataset, "train", location=location)
    n_bytes = sum(len(data.read_image_bytes(i)) for i in range(len(data)))
    t_digest = min(_timed(data.content_digest) for _ in range(3))

    config = root / "integrity_models.json"
    config.write_text(json.dumps({"m": {"source": "timm", "model_name": model_name}}))
    settings = ExtractionSettings(
        project_root=location.root,
        models_config=config,
        model_ids=("m",),
        datasets=(dataset,),
        splits=("train",),
        batch_size=batch_size,
        num_workers=num_workers,
        device=str(device),
        force=True,
    )
    t_extract = _timed(lambda: run_model(settings, "m", progress=False))

    with open_cache(location.feature_file(dataset, "train", "m")) as cache:
        keys = list(cache.keys)
        labels = cache.labels
        blocks = {name: cache.block(name) for name in cache.block_names}
        logits = cache.logits if cache.has_logits else None
    dims = {name: block.shape[1] for name, block in blocks.items()}
    starts = range(0, len(keys), batch_size)

    def checked() -> None:
        with tempfile.TemporaryDirectory() as tmp, atomic_output(Path(tmp) / "c.h5") as path:
            writer = FeatureCacheWriter(
                path, block_dims=dims, n_classes=None if logits is None else logits.shape[1]
            )
            for i in starts:
                sl = slice(i, i + batch_size)
                writer.append(
                    keys[sl],
                    labels[sl],
                    {n: b[sl] for n, b in blocks.items()},
                    None if logits is None else logits[sl],
                )
            writer.finalize({"model_id": "m", "content_key": "k"})

    def plain() -> None:  # same layout and chunks: no checksum filter, no flushes, no read-back
        with tempfile.TemporaryDirectory() as tmp, h5py.File(Path(tmp) / "p.h5", "w") as f:
            chunk = min(256, len(keys))
            out = {
                "keys": f.create_dataset(
                    "keys", (0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(chunk,)
                ),
                "labels": f.create_dataset(
                    "labels", (0,), maxshape=(None,), dtype=np.int64, chunks=(chunk,)
                ),
            }
            for n, d in dims.items():
                out[n] = f.create_dataset(
                    f"blocks/{n}", (0, d), maxshape=(None, d), dtype="float16", chunks=(chunk, d)
                )
            if logits is not None:
                out["logits"] = f.create_dataset(
                    "logits",
                    (0, logits.shape[1]),
                    maxshape=(None, logits.shape[1]),
                    dtype=np.float32,
                    chunks=(chunk, logits.shape[1]),
                )
            for i in starts:
                sl = slice(i, i + batch_size)
                stop = min(i + batch_size, len(keys))
                for name, values in (
                    ("keys", keys[sl]),
                    ("labels", labels[sl]),
                    *((n, b[sl].astype(np.float16)) for n, b in blocks.items()),
                    *((("logits", logits[sl]),) if logits is not None else ()),
                ):
                    ds = out[name]
                    ds.resize((stop, *ds.shape[1:]))
                    ds[i:stop] = values
            f.attrs["complete"] = True

    times = _best_times({"checked": checked, "plain": plain}, device, 3)
    return {
        "model": model_name,
        "images": len(data),
        "mean_jpeg_kb": n_bytes / len(data) / 1024,
        "extract_s": t_extract,
        "digest_s": t_digest,
        "digest_mb_s": n_bytes / 2**20 / t_digest,
        "digest_share": t_digest / t_extract,
        "write_checked_s": times["checked"],
        "write_plain_s": times["plain"],
        "checksum_share": max(0.0, times["checked"] - times["plain"]) / t_extract,
    }


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["convnext_atto", "vit_tiny_patch16_224"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--n_batches", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--skip_rss", action="store_true")
    parser.add_argument(
        "--integrity_images", type=int, default=1000, help="JPEGs in the integrity benchmark"
    )
    parser.add_argument("--integrity_size", type=int, default=256, help="their side in pixels")
    parser.add_argument(
        "--only_integrity", action="store_true", help="run only the integrity benchmark"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"# device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"batch={args.batch_size} batches={args.n_batches}"
    )
    if args.only_integrity:
        _print_integrity(args, device)
        return 0
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
    _print_integrity(args, device)
    _ = resource  # RSS read in the child processes
    return 0


def _print_integrity(args: argparse.Namespace, device: torch.device) -> None:
    print(
        f"\n# integrity costs: {args.integrity_images} JPEGs of {args.integrity_size}px, share "
        "of an end-to-end extraction (content digest by the planner; checksummed vs plain HDF5)"
    )
    print(
        "model                      KiB/img  extract s  digest s  digest MB/s  digest %  "
        "checked s  plain s  checksum %"
    )
    for name in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            r = bench_integrity(
                name,
                device=device,
                batch_size=args.batch_size,
                num_workers=args.num_workers,
                root=Path(tmp),
                n_images=args.integrity_images,
                image_size=args.integrity_size,
            )
        print(
            f"{r['model']:<26} {r['mean_jpeg_kb']:>7.1f} {r['extract_s']:>10.2f} "
            f"{r['digest_s']:>9.3f} {r['digest_mb_s']:>12.0f} {100 * r['digest_share']:>9.2f} "
            f"{r['write_checked_s']:>10.3f} {r['write_plain_s']:>8.3f} "
            f"{100 * r['checksum_share']:>11.2f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
