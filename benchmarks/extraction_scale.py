"""Benchmark: extraction at study scale — real-size architectures on a real 224-px JPEG webdataset.

Writes a webdataset of ``--n_images`` synthesised JPEGs (``--image_size`` px, quality 90,
``--n_shards`` real ``.tar`` shards with ``.jpg`` + ``.cls`` members, like the digits dataset)
in a temporary folder, then for each architecture (random weights, ``pretrained: false``, no
download; its own eval transform — resize + centre crop to 224, normalise) measures in one
process:

  (a) **bare** forward pass on pre-decoded batches (no hooks, no I/O);
  (b) **ours** on the same tensors: :class:`BlockExtractor` hooks + in-hook pooling of every
      block + :class:`FeatureCacheWriter` HDF5 writes (what the stage runs per batch);
  (c) **loader**: decode + eval transform through the DataLoader (``--num_workers``), images/s;
      with ``--decode_device cuda`` also the on-device decoder (workers read bytes only);
  (d) **end to end**: the stage's ``extract_to_cache`` on the shards (loader + model + writes).

(a) and (b) are interleaved, best of ``--repeats``. Loader vs model throughput says which
bounds the run. The default batch is 256 (the issue's); on a CPU pass ``--batch_size 16``.

    nice uv run --frozen python benchmarks/extraction_scale.py --batch_size 16 --n_batches 2
    python benchmarks/extraction_scale.py --device cuda --num_workers 8 --decode_device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from extraction import _best_times, _jpeg_dataset, _sync  # noqa: E402

from sim_consistency.config import parse_models_config  # noqa: E402
from sim_consistency.data import collate_samples, load_dataset  # noqa: E402
from sim_consistency.data.wds import EncodedImages, collate_encoded  # noqa: E402
from sim_consistency.features import (  # noqa: E402
    BlockExtractor,
    FeatureCacheWriter,
    write_features,
)
from sim_consistency.features.extract import DeviceDecoder  # noqa: E402
from sim_consistency.features.pipeline import (  # noqa: E402
    block_specs,
    extract_to_cache,
    plan_model,
)
from sim_consistency.io import atomic_output  # noqa: E402
from sim_consistency.models import create_model  # noqa: E402
from sim_consistency.project import ProjectLocation  # noqa: E402
from sim_consistency.stages.feature_extraction import ExtractionSettings  # noqa: E402

#: The issue's architectures: name -> models-config entry (random weights, no download).
ARCHITECTURES = {
    "vit_base_patch16_224": {"source": "timm", "model_name": "vit_base_patch16_224"},
    "convnext_small": {"source": "timm", "model_name": "convnext_small"},
    "resnet50": {"source": "timm", "model_name": "resnet50"},
    "open_clip_ViT-B-32": {"source": "open_clip", "model_name": "ViT-B-32"},
}


def _loader(data, batch_size: int, num_workers: int, encoded: bool):
    return torch.utils.data.DataLoader(
        EncodedImages(data) if encoded else data,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_encoded if encoded else collate_samples,
    )


def bench_architecture(name: str, args: argparse.Namespace, root: Path, dataset: str) -> dict:
    device = torch.device(args.device)
    location = ProjectLocation.resolve(root)
    raw = {name: {**ARCHITECTURES[name], "pretrained": False}}
    config = root / f"{name}.json"
    config.write_text(json.dumps(raw))
    specs = parse_models_config(raw)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    loaded = create_model(specs[name], specs, device=device, location=location)
    t_build = time.perf_counter() - t0
    n_images = args.batch_size * args.n_batches
    data = load_dataset(
        dataset, "train", location=location, transform=loaded.transform, max_samples=n_images
    )
    # (c) loader: decode + transform (PIL in workers), and on-device decoding when asked
    _sync(device)
    t0 = time.perf_counter()
    batches = [b.image for b in _loader(data, args.batch_size, args.num_workers, False)]
    t_loader = time.perf_counter() - t0
    t_device_decode = None
    if args.decode_device != "cpu":
        decoder = DeviceDecoder(loaded.transform, device)
        t0 = time.perf_counter()
        for b in _loader(data, args.batch_size, args.num_workers, True):
            decoder(b.image, b.key)
        _sync(device)
        t_device_decode = time.perf_counter() - t0
    batches = [x.to(device) for x in batches]
    blocks = block_specs(loaded)
    dims = {i.name: i.dim for i in loaded.blocks}

    def bare() -> None:
        with torch.inference_mode():
            for x in batches:
                loaded.model(x)

    def ours() -> None:
        with tempfile.TemporaryDirectory() as tmp, atomic_output(Path(tmp) / "f.h5") as path:
            writer = FeatureCacheWriter(path, block_dims=dims, n_classes=loaded.n_classes)
            with BlockExtractor(loaded.model, blocks, with_logits=loaded.has_head) as extractor:
                labels = np.zeros(args.batch_size, np.int64)
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
            writer.close()

    bare()  # warm-up
    times = _best_times({"bare": bare, "ours": ours}, device, args.repeats)
    # (d) the stage's extraction of the same rows, from the shards
    settings = ExtractionSettings(
        project_root=location.root,
        models_config=config,
        model_ids=(name,),
        datasets=(dataset,),
        splits=("train",),
        max_samples=n_images,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=str(device),
        force=True,
        decode_device=args.decode_device,
    )
    (item,) = plan_model(settings, specs[name], loaded)
    t0 = time.perf_counter()
    extract_to_cache(settings, item, loaded, progress=False)
    _sync(device)
    t_e2e = time.perf_counter() - t0
    out = {
        "model": name,
        "blocks": len(blocks),
        "images": n_images,
        "batch_size": args.batch_size,
        "build_s": round(t_build, 2),
        "bare_img_s": n_images / times["bare"],
        "ours_img_s": n_images / times["ours"],
        "ours_over_bare": times["bare"] / times["ours"],
        "loader_img_s": n_images / t_loader,
        "end_to_end_img_s": n_images / t_e2e,
        "decode_device": args.decode_device,
    }
    if t_device_decode is not None:
        out["device_decode_img_s"] = n_images / t_device_decode
    out["bound_by"] = "loader" if out["loader_img_s"] < out["bare_img_s"] else "model"
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--n_batches", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--num_workers", type=int, default=min(8, max(1, (os.cpu_count() or 2) - 1)))
    p.add_argument("--n_images", type=int, default=None, help="default batch × n_batches")
    p.add_argument("--image_size", type=int, default=320, help="side of the synthesised JPEGs")
    p.add_argument("--n_shards", type=int, default=4)
    p.add_argument("--decode_device", choices=["cpu", "cuda"], default="cpu")
    args = p.parse_args()
    n_images = args.n_images or args.batch_size * args.n_batches
    with tempfile.TemporaryDirectory(prefix="simc_extraction_scale_") as tmp:
        root = Path(tmp)
        ProjectLocation.resolve(root).create()
        t0 = time.perf_counter()
        dataset = _jpeg_dataset(
            root, "jpeg224", n_images, args.image_size, n_shards=args.n_shards, quality=90
        )
        shards = sorted((root / "datasets" / "wds" / "wds_jpeg224" / "train").glob("*.tar"))
        print(
            json.dumps(
                {
                    "dataset": dataset,
                    "images": n_images,
                    "shards": len(shards),
                    "mb": round(sum(s.stat().st_size for s in shards) / 2**20, 1),
                    "write_s": round(time.perf_counter() - t0, 1),
                }
            ),
            flush=True,
        )
        for name in args.models:
            print(json.dumps(bench_architecture(name, args, root, dataset)), flush=True)
    print(
        json.dumps(
            {
                "device": str(args.device),
                "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "num_workers": args.num_workers,
                "load_average": os.getloadavg(),
            }
        )
    )


if __name__ == "__main__":
    main()
