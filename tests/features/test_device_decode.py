"""Decoding and preprocessing on the model's device equals the PIL eval transform (tolerance).

The CUDA variant (nvJPEG) runs only where torch sees a GPU; on CPU the same tensor pipeline
runs with torchvision's CPU ``decode_jpeg``.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import webdataset
from PIL import Image

from sim_consistency.data.dataset import collate_samples
from sim_consistency.data.wds import EncodedImages, WdsDataset, collate_encoded
from sim_consistency.errors import ConfigError, DataError
from sim_consistency.features.extract import (
    DECODE_MEAN_TOLERANCE,
    DECODE_TOLERANCE,
    DeviceDecoder,
)


def photo(width: int, height: int, seed: int, *, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    """A photograph-like image: smooth colour gradients, a few shapes, sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    base = np.stack(
        [np.sin(6 * xx + c) * np.cos(4 * yy - c) * 100 + 128 for c in rng.uniform(0, 3, 3)], -1
    )
    for _ in range(4):  # hard edges: where resampling kernels differ most
        x0, y0 = rng.integers(0, width - 20), rng.integers(0, height - 20)
        base[y0 : y0 + rng.integers(10, 80), x0 : x0 + rng.integers(10, 80)] = rng.uniform(
            0, 255, 3
        )
    pixels = (base + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    out = io.BytesIO()
    image.save(out, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


IMAGES = [
    photo(500, 375, 0),
    photo(224, 224, 1),
    photo(320, 480, 2),
    photo(256, 256, 3, mode="L"),  # grayscale JPEG: decoded to RGB like PIL's convert
    photo(300, 200, 4, fmt="PNG"),  # not a JPEG: decoded on the CPU, then moved
    photo(32, 32, 5, fmt="PNG"),  # CIFAR-sized: upscaled 7×
    photo(64, 48, 6),
]


def _transforms():
    import open_clip
    import timm
    from timm.data import create_transform, resolve_model_data_config

    vit = timm.create_model("test_vit", pretrained=False)
    yield "timm_test_vit", create_transform(**resolve_model_data_config(vit), is_training=False)
    cfg = {"input_size": (3, 224, 224), "interpolation": "bilinear", "crop_pct": 0.875}
    yield "timm_224_bilinear", create_transform(**cfg, is_training=False)
    yield "open_clip_224", open_clip.image_transform(224, is_train=False)


def _pil_batch(transform, images):
    return torch.stack([transform(Image.open(io.BytesIO(b)).convert("RGB")) for b in images])


def _pixel_diff(a: torch.Tensor, b: torch.Tensor, transform) -> torch.Tensor:
    """|a - b| in [0, 1] pixel units (normalisation undone)."""
    norm = next(s for s in transform.transforms if type(s).__name__ == "Normalize")
    std = torch.as_tensor(norm.std, dtype=torch.float32)[:, None, None]
    return (a - b).abs() * std


@pytest.mark.parametrize("name,transform", list(_transforms()), ids=lambda v: str(v)[:20])
def test_tensor_pipeline_equals_pil_on_cpu(name, transform):
    decoder = DeviceDecoder(transform, "cpu")
    encoded = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in IMAGES]
    ours = decoder(encoded, [f"k{i}" for i in range(len(IMAGES))])
    ref = _pil_batch(transform, IMAGES)
    assert ours.shape == ref.shape and ours.dtype == torch.float32
    diff = _pixel_diff(ours, ref, transform)
    assert float(diff.max()) <= DECODE_TOLERANCE, float(diff.max()) * 255
    assert float(diff.mean()) <= DECODE_MEAN_TOLERANCE, float(diff.mean()) * 255


def test_unsupported_step_and_corrupt_bytes_are_clear_errors():
    from torchvision import transforms as T

    with pytest.raises(ConfigError, match="ColorJitter.*--decode_device cpu"):
        DeviceDecoder(T.Compose([T.ColorJitter(0.1), T.ToTensor()]), "cpu")
    decoder = DeviceDecoder(T.Compose([T.CenterCrop(8), T.ToTensor()]), "cpu")
    broken = torch.frombuffer(bytearray(IMAGES[1][:200]), dtype=torch.uint8)
    with pytest.raises(DataError, match="sample 'bad'"):
        decoder([broken], ["bad"])


def test_encoded_rows_through_a_dataloader_match_the_pil_dataset(tmp_path):
    """EncodedImages + collate_encoded + DeviceDecoder == the dataset with the PIL transform."""
    folder = tmp_path / "wds_photos"
    (folder / "test").mkdir(parents=True)
    (folder / "classnames.txt").write_text("a\nb\n")
    with webdataset.TarWriter(str(folder / "test" / "0.tar")) as sink:
        for i, data in enumerate(IMAGES):
            ext = "png" if data[:4] == b"\x89PNG" else "jpg"  # both paths of the decoder
            sink.write({"__key__": f"s{i:04d}", ext: data, "cls": str(i % 2)})
    (folder / "test" / "nshards.txt").write_text("1\n")
    transform = dict(_transforms())["open_clip_224"]
    ds = WdsDataset(folder, "test")
    loader = torch.utils.data.DataLoader(
        EncodedImages(ds), batch_size=3, num_workers=1, collate_fn=collate_encoded
    )
    decoder = DeviceDecoder(transform, "cpu")
    batches = decoder.batches((b.key, b.label.numpy(), b.image) for b in loader)
    ours = [(list(k), lab, x) for k, lab, x in batches]
    ref = list(
        torch.utils.data.DataLoader(
            WdsDataset(folder, "test", transform=transform),
            batch_size=3,
            collate_fn=collate_samples,
        )
    )
    for (keys, labels, x), r in zip(ours, ref, strict=True):
        assert keys == list(r.key) and np.array_equal(labels, r.label.numpy())
        assert float(_pixel_diff(x, r.image, transform).max()) <= DECODE_TOLERANCE


def test_cuda_decode_equals_pil():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine: nvJPEG decoding is tested on GPU machines")
    for _name, transform in _transforms():
        encoded = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in IMAGES]
        ours = DeviceDecoder(transform, "cuda")(encoded, [str(i) for i in range(len(IMAGES))])
        diff = _pixel_diff(ours.cpu(), _pil_batch(transform, IMAGES), transform)
        assert float(diff.max()) <= DECODE_TOLERANCE
        assert float(diff.mean()) <= DECODE_MEAN_TOLERANCE
