"""data/digits.py: the wds/digits builder writes real webdataset shards of sklearn's digits."""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import webdataset
from PIL import Image
from sklearn.datasets import load_digits

from sim_consistency.data import DIGITS_CLASSNAMES, build_digits
from sim_consistency.data.digits import (
    BUILD_INFO,
    DIGITS_SPLITS,
    MAX_SHARD_SAMPLES,
    digits_key,
    digits_pixels,
    digits_split_indices,
    main,
)
from sim_consistency.project import ProjectLocation


@pytest.fixture(scope="module")
def sklearn_digits():
    digits = load_digits()
    return np.asarray(digits.images), np.asarray(digits.target)


def _shard_urls(folder, split):
    n_shards = int((folder / split / "nshards.txt").read_text())
    return [str(folder / split / f"{i}.tar") for i in range(n_shards)]


def _read_with_webdataset(folder, split):
    """Return {key: (pixels, label)} read with the webdataset library itself, in stream order."""
    dataset = webdataset.WebDataset(_shard_urls(folder, split), shardshuffle=False)
    rows = {}
    for sample in dataset:
        pixels = np.asarray(Image.open(io.BytesIO(sample["png"])))
        rows[sample["__key__"]] = (pixels, int(sample["cls"].decode("ascii")))
    return rows


def test_pixel_map_is_exactly_invertible():
    values = np.arange(17)
    pixels = digits_pixels(values)
    assert pixels.dtype == np.uint8 and pixels[0] == 0 and pixels[-1] == 255
    assert np.array_equal(np.rint(pixels.astype(np.float64) * 16 / 255), values)
    assert np.unique(pixels).size == 17


def test_shards_read_back_with_webdataset_match_sklearn(digits_root, sklearn_digits):
    images, labels = sklearn_digits
    folder = digits_root.wds_dataset_dir("digits")
    seen = []
    for split in DIGITS_SPLITS:
        rows = _read_with_webdataset(folder, split)
        for key, (pixels, label) in rows.items():
            index = int(key[1:])
            assert key == digits_key(index)
            assert pixels.shape == (8, 8) and pixels.dtype == np.uint8  # grayscale PNG
            recovered = np.rint(pixels.astype(np.float64) * 16 / 255)
            assert np.array_equal(recovered, images[index]), key
            assert label == labels[index], key
        assert list(rows) == sorted(rows)  # sklearn order within a split
        seen += [int(key[1:]) for key in rows]
    assert sorted(seen) == list(range(1797))


def test_splits_are_stratified_disjoint_and_cover_everything(digits_root, sklearn_digits):
    _, labels = sklearn_digits
    splits = digits_split_indices(labels)
    assert {split: rows.size for split, rows in splits.items()} == {
        "train": 1078,
        "val": 359,
        "test": 360,
    }
    everything = np.concatenate(list(splits.values()))
    assert np.array_equal(np.sort(everything), np.arange(1797))  # disjoint and complete
    totals = np.bincount(labels, minlength=10)
    for split, fraction in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        counts = np.bincount(labels[splits[split]], minlength=10)
        assert np.all(np.abs(counts - fraction * totals) <= 1.0), (split, counts)
    # the shards hold exactly these splits
    folder = digits_root.wds_dataset_dir("digits")
    for split in DIGITS_SPLITS:
        keys = list(_read_with_webdataset(folder, split))
        assert keys == [digits_key(i) for i in splits[split]]


def test_layout_several_shards_per_split(digits_root):
    folder = digits_root.wds_dataset_dir("digits")
    assert folder == digits_root.root / "datasets" / "wds" / "wds_digits"
    assert (folder / "classnames.txt").read_text().split() == list(DIGITS_CLASSNAMES)
    info = json.loads((folder / BUILD_INFO).read_text())
    for split in DIGITS_SPLITS:
        n_shards = int((folder / split / "nshards.txt").read_text())
        assert n_shards >= 2
        assert sorted(p.name for p in (folder / split).glob("*.tar")) == sorted(
            f"{i}.tar" for i in range(n_shards)
        )
        sizes = [
            len(list(webdataset.WebDataset(url, shardshuffle=False)))
            for url in _shard_urls(folder, split)
        ]
        assert max(sizes) <= MAX_SHARD_SAMPLES and max(sizes) - min(sizes) <= 1
        assert sum(sizes) == info["splits"][split]["n_samples"]
        assert n_shards == math.ceil(sum(sizes) / MAX_SHARD_SAMPLES)
    assert info["n_samples"] == 1797 and info["seed"] == 0


def _copy_root(digits_root, tmp_path):
    location = ProjectLocation.resolve(tmp_path / "root")
    shutil.copytree(digits_root.wds_dataset_dir("digits"), location.wds_dataset_dir("digits"))
    return location


def test_complete_build_is_reused(digits_root, tmp_path):
    location = _copy_root(digits_root, tmp_path)
    shard = location.wds_dataset_dir("digits") / "test" / "0.tar"
    before = shard.stat().st_mtime_ns
    assert build_digits(location) == location.wds_dataset_dir("digits")
    assert shard.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "damage", ["missing_shard", "resized_shard", "no_build_info", "old_version"]
)
def test_incomplete_or_outdated_build_is_rebuilt(digits_root, tmp_path, damage, caplog):
    location = _copy_root(digits_root, tmp_path)
    folder = location.wds_dataset_dir("digits")
    reference = (digits_root.wds_dataset_dir("digits") / "train" / "1.tar").read_bytes()
    if damage == "missing_shard":
        (folder / "train" / "1.tar").unlink()
    elif damage == "resized_shard":
        (folder / "train" / "1.tar").write_bytes(reference[:1000])
    elif damage == "no_build_info":
        (folder / BUILD_INFO).unlink()
    else:
        info = json.loads((folder / BUILD_INFO).read_text())
        info["builder_version"] = 0
        (folder / BUILD_INFO).write_text(json.dumps(info))
    with caplog.at_level("WARNING"):
        build_digits(location)
    assert "rebuilding" in caplog.text
    assert (folder / "train" / "1.tar").read_bytes() == reference  # deterministic bytes
    assert json.loads((folder / BUILD_INFO).read_text())["builder_version"] >= 1
    assert sorted(p.name for p in folder.parent.iterdir()) == ["wds_digits"]  # no temp left


def test_force_rebuild_and_main(tmp_path, capsys):
    assert main(["--project_root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "datasets" / "wds" / "wds_digits"
    assert str(folder) in out and "1078" in out and "359" in out and "360" in out
    before = (folder / "val" / "0.tar").read_bytes()
    assert main(["--project_root", str(tmp_path), "--force"]) == 0
    assert (folder / "val" / "0.tar").read_bytes() == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["wds_digits"]


@pytest.mark.slow
def test_module_entry_point_builds(tmp_path):
    """``python -m sim_consistency.data.digits --project_root DIR`` builds the shards."""
    result = subprocess.run(
        [sys.executable, "-m", "sim_consistency.data.digits", "--project_root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr
    folder = tmp_path / "datasets" / "wds" / "wds_digits"
    for split in ("train", "val", "test"):
        n = int((folder / split / "nshards.txt").read_text())
        assert n >= 2 and all((folder / split / f"{i}.tar").is_file() for i in range(n))
    assert (folder / "classnames.txt").read_text().split() == list(DIGITS_CLASSNAMES)
