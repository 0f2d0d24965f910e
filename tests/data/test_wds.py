"""data/wds.py: the map-style webdataset loader, on real shards (digits and hand-written ones)."""

from __future__ import annotations

import io
import pickle
import shutil
import tarfile

import numpy as np
import pytest
import torch
import webdataset
from PIL import Image
from sklearn.datasets import load_digits

from sim_consistency.data import Sample, WdsDataset, collate_samples
from sim_consistency.data.digits import DIGITS_SPLITS, digits_key, digits_split_indices
from sim_consistency.errors import DataError, MissingInputError

# -- helpers -----------------------------------------------------------------------------------


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, h, w) float tensor in [0, 1]; module level so DataLoader workers can use it."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


def encode(color, fmt="PNG", size=(4, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def write_wds(folder, shards, *, split="test", classnames=("a", "b", "c")):
    """Write a wds dataset: ``shards`` is a list (one per shard) of lists of sample dicts."""
    (folder / split).mkdir(parents=True)
    (folder / "classnames.txt").write_text("\n".join(classnames) + "\n")
    for i, samples in enumerate(shards):
        with webdataset.TarWriter(str(folder / split / f"{i}.tar")) as sink:
            for sample in samples:
                sink.write(sample)
    (folder / split / "nshards.txt").write_text(f"{len(shards)}\n")
    return folder


def good(key, label=0, ext="png", color=(10, 20, 30)):
    fmt = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}[ext]
    return {"__key__": key, ext: encode(color, fmt), "cls": str(label)}


@pytest.fixture
def digits_copy(digits_root, tmp_path):
    """A private copy of wds/digits' test split (and classnames) to damage."""
    source = digits_root.wds_dataset_dir("digits")
    target = tmp_path / "wds_digits"
    target.mkdir()
    shutil.copy(source / "classnames.txt", target / "classnames.txt")
    shutil.copytree(source / "test", target / "test")
    return target


@pytest.fixture(scope="module")
def sklearn_digits():
    digits = load_digits()
    return np.asarray(digits.images), np.asarray(digits.target)


# -- reading -----------------------------------------------------------------------------------


def test_rows_match_sklearn_in_deterministic_order(digits_root, sklearn_digits):
    images, labels = sklearn_digits
    splits = digits_split_indices(labels)
    folder = digits_root.wds_dataset_dir("digits")
    for split in DIGITS_SPLITS:
        ds = WdsDataset(folder, split, name="wds/digits")
        assert ds.name == "wds/digits" and ds.split == split
        assert ds.keys == [digits_key(i) for i in splits[split]]
        assert ds.labels.dtype == np.int64
        assert np.array_equal(ds.labels, labels[splits[split]])
        assert ds.classnames[3] == "three" and ds.n_classes == 10
        shard_order = [ds.shard_of(i).name for i in range(len(ds))]
        assert shard_order == sorted(shard_order, key=lambda name: int(name.split(".")[0]))
    ds = WdsDataset(folder, "test")
    for i in range(len(ds)):
        sample = ds[i]
        assert isinstance(sample, Sample) and sample.index == i
        pixels = np.asarray(sample.image)
        assert sample.image.mode == "RGB" and pixels.shape == (8, 8, 3)
        source = int(sample.key[1:])
        assert np.array_equal(np.rint(pixels[..., 0].astype(np.float64) * 16 / 255), images[source])
        assert sample.label == labels[source]
    assert ds[-1].key == ds.keys[-1]
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_order_equals_webdataset_stream_order(digits_root):
    folder = digits_root.wds_dataset_dir("digits")
    urls = [str(folder / "train" / f"{i}.tar") for i in range(6)]
    stream_keys = [s["__key__"] for s in webdataset.WebDataset(urls, shardshuffle=False)]
    assert WdsDataset(folder, "train").keys == stream_keys
    assert WdsDataset(folder, "train").keys == WdsDataset(folder, "train").keys


def test_dataloader_with_two_workers(digits_root):
    ds = WdsDataset(digits_root.wds_dataset_dir("digits"), "val", transform=to_tensor)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=50, num_workers=2, collate_fn=collate_samples
    )
    keys, indices, labels, images = [], [], [], []
    for batch in loader:
        assert isinstance(batch, Sample) and isinstance(batch.key, list)
        keys += batch.key
        indices.append(batch.index)
        labels.append(batch.label)
        images.append(batch.image)
    assert keys == ds.keys
    assert torch.equal(torch.cat(indices), torch.arange(len(ds)))
    assert np.array_equal(torch.cat(labels).numpy(), ds.labels)
    images = torch.cat(images)
    assert images.shape == (len(ds), 3, 8, 8) and images.dtype == torch.float32
    for i in (0, 17, len(ds) - 1):
        assert torch.equal(images[i], ds[i].image)


def test_subset_view_and_pickling(digits_root):
    ds = WdsDataset(digits_root.wds_dataset_dir("digits"), "test", name="wds/digits")
    view = ds.subset([5, 2, 300])
    assert len(view) == 3 and view.keys == [ds.keys[5], ds.keys[2], ds.keys[300]]
    assert np.array_equal(view.labels, ds.labels[[5, 2, 300]])
    assert np.array_equal(view.source_indices, [5, 2, 300])
    assert view[1] == Sample(1, ds.keys[2], view[1].image, int(ds.labels[2]))
    assert np.array_equal(np.asarray(view[1].image), np.asarray(ds[2].image))
    inner = view.subset([2, 0])
    assert inner.keys == [ds.keys[300], ds.keys[5]]
    assert np.array_equal(inner.source_indices, [300, 5])
    assert "3 samples (subset of 360)" in view.describe()
    assert len(ds) == 360  # the parent is untouched
    clone = pickle.loads(pickle.dumps(view))
    assert clone.keys == view.keys and np.array_equal(
        np.asarray(clone[0].image), np.asarray(view[0].image)
    )
    with pytest.raises(IndexError, match="out of range"):
        ds.subset([0, 360])
    with pytest.raises(ValueError, match="duplicates"):
        ds.subset([1, 1])
    with pytest.raises(TypeError, match="integers"):
        ds.subset([0.5])
    assert len(ds.subset([])) == 0


def test_describe_and_collate_without_transform(digits_root):
    ds = WdsDataset(digits_root.wds_dataset_dir("digits"), "test", name="wds/digits")
    text = ds.describe()
    assert "wds/digits [test]" in text and "360 samples" in text and "2 shards" in text
    with pytest.raises(TypeError, match="not a tensor"):
        collate_samples([ds[0], ds[1]])


def test_image_formats_keys_with_folders_and_extra_members(tmp_path):
    folder = write_wds(
        tmp_path / "wds_mixed",
        [
            [
                good("a/x", 0, "png", (255, 0, 0)),
                good("a/y", 1, "jpg", (0, 255, 0)),
                {**good("b/z", 2, "webp", (0, 0, 255)), "txt": "a caption"},
            ],
            [good("c", 1, "jpeg", (200, 200, 200))],
        ],
    )
    ds = WdsDataset(folder, "test")
    assert ds.keys == ["a/x", "a/y", "b/z", "c"]
    assert ds.image_extensions == ["png", "jpg", "webp", "jpeg"]
    assert ds.labels.tolist() == [0, 1, 2, 1]
    assert np.asarray(ds[0].image)[0, 0].tolist() == [255, 0, 0]
    assert np.abs(np.asarray(ds[1].image)[0, 0].astype(int) - [0, 255, 0]).max() < 8
    assert ds[2].image.size == (4, 3)
    assert ds.read_image_bytes(0) == encode((255, 0, 0))


# -- bad inputs --------------------------------------------------------------------------------


def test_missing_dataset_folder(tmp_path):
    folder = tmp_path / "datasets" / "wds" / "wds_vtab-cifar10"
    with pytest.raises(MissingInputError) as info:
        WdsDataset(folder, "test", name="wds/vtab/cifar10")
    message = str(info.value)
    assert str(folder) in message and "download_webdatasets.py" in message
    assert f"--project_root {tmp_path}" in message


def test_missing_split(digits_copy):
    with pytest.raises(MissingInputError, match=r"split 'train'.*available splits: test"):
        WdsDataset(digits_copy, "train")


def test_missing_nshards(digits_copy):
    (digits_copy / "test" / "nshards.txt").unlink()
    with pytest.raises(MissingInputError, match="nshards.txt"):
        WdsDataset(digits_copy, "test")


def test_bad_nshards(digits_copy):
    (digits_copy / "test" / "nshards.txt").write_text("two\n")
    with pytest.raises(DataError, match="'two'"):
        WdsDataset(digits_copy, "test")


def test_missing_shard(digits_copy):
    (digits_copy / "test" / "1.tar").unlink()
    with pytest.raises(MissingInputError) as info:
        WdsDataset(digits_copy, "test")
    assert str(digits_copy / "test" / "1.tar") in str(info.value)


def test_shard_count_differs_from_nshards(digits_copy):
    (digits_copy / "test" / "nshards.txt").write_text("1\n")
    with pytest.raises(DataError, match="nshards.txt says 1 shards but the folder holds 2"):
        WdsDataset(digits_copy, "test")


def test_missing_or_empty_classnames(digits_copy):
    (digits_copy / "classnames.txt").write_text("\n\n")
    with pytest.raises(DataError, match="classnames.txt"):
        WdsDataset(digits_copy, "test")
    (digits_copy / "classnames.txt").unlink()
    with pytest.raises(MissingInputError, match="classnames.txt"):
        WdsDataset(digits_copy, "test")


def _members(shard):
    with tarfile.open(shard) as tar:
        return tar.getmembers()


@pytest.mark.parametrize(
    "cut",
    [
        "mid_data",
        "mid_header",
        "at_header",
        "no_end_marker",
        "garbage_header",
        "not_a_tar",
        "empty",
    ],
)
def test_truncated_or_corrupt_shard(digits_copy, cut):
    shard = digits_copy / "test" / "1.tar"
    data = shard.read_bytes()
    member = _members(shard)[41]
    last = _members(shard)[-1]
    if cut == "mid_data":
        damaged = data[: member.offset_data + member.size // 2]
    elif cut == "mid_header":
        damaged = data[: member.offset + 100]
    elif cut == "at_header":
        damaged = data[: member.offset]
    elif cut == "no_end_marker":
        damaged = data[: last.offset_data + 512 * ((last.size + 511) // 512)]
    elif cut == "garbage_header":
        noise = np.random.default_rng(0).integers(1, 255, 512, dtype=np.uint8).tobytes()
        damaged = data[: member.offset] + noise + data[member.offset + 512 :]
    elif cut == "not_a_tar":
        damaged = np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes()
    else:
        damaged = b""
    shard.write_bytes(damaged)
    with pytest.raises(DataError) as info:
        WdsDataset(digits_copy, "test")
    assert str(shard) in str(info.value)
    assert "download_webdatasets.py" in str(info.value)


def test_undecodable_image_fails_at_decode_time_naming_key_and_shard(tmp_path):
    folder = write_wds(
        tmp_path / "wds_bad_png",
        [[good("ok", 0), {"__key__": "broken", "png": b"\x89PNG\r\n\x1a\n garbage", "cls": "1"}]],
    )
    ds = WdsDataset(folder, "test")  # indexing reads headers only
    assert ds[0].key == "ok"
    with pytest.raises(DataError) as info:
        ds[1]
    assert "'broken'" in str(info.value) and str(folder / "test" / "0.tar") in str(info.value)


def test_label_out_of_range(tmp_path):
    folder = write_wds(tmp_path / "wds_label", [[good("fine", 2), good("s0000042", 99)]])
    with pytest.raises(DataError) as info:
        WdsDataset(folder, "test")
    message = str(info.value)
    assert "'s0000042'" in message and "label 99" in message
    assert str(folder / "classnames.txt") in message


def test_label_not_an_integer(tmp_path):
    folder = write_wds(tmp_path / "wds_label", [[{**good("k1"), "cls": "cat"}]])
    with pytest.raises(DataError, match=r"'k1'.*not an ASCII integer"):
        WdsDataset(folder, "test")


def test_sample_without_image_or_label(tmp_path):
    no_image = write_wds(tmp_path / "wds_a", [[good("k0"), {"__key__": "k1", "cls": "0"}]])
    with pytest.raises(DataError) as info:
        WdsDataset(no_image, "test")
    assert "'k1' has no image" in str(info.value)
    assert str(no_image / "test" / "0.tar") in str(info.value)
    no_label = write_wds(tmp_path / "wds_b", [[{"__key__": "k2", "png": encode((1, 2, 3))}]])
    with pytest.raises(DataError, match=r"0\.tar: sample 'k2' has no label"):
        WdsDataset(no_label, "test")


def test_duplicate_key_across_shards(tmp_path):
    folder = write_wds(tmp_path / "wds_dup", [[good("k0"), good("k1")], [good("k1")]])
    with pytest.raises(DataError, match=r"1\.tar: key 'k1' repeats \(already in .*0\.tar\)"):
        WdsDataset(folder, "test")


def test_empty_split(tmp_path):
    folder = write_wds(tmp_path / "wds_empty", [[]])
    with pytest.raises(DataError, match="no samples"):
        WdsDataset(folder, "test")
