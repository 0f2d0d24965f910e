"""data/resolve.py: dataset names, dataset lists and load_dataset (auto-built digits, subsets)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from sim_consistency.data import (
    DATASET_BUILDERS,
    ImageFolderDataset,
    WdsDataset,
    build_digits,
    load_dataset,
    parse_dataset_name,
    read_dataset_list,
    stratified_subset,
)
from sim_consistency.errors import ConfigError, MissingInputError
from sim_consistency.project import ProjectLocation


def test_parse_dataset_name():
    parsed = parse_dataset_name("wds/vtab/cifar10")
    assert (parsed.kind, parsed.name, parsed.dataset) == ("wds", "vtab/cifar10", "wds/vtab/cifar10")
    parsed = parse_dataset_name("imagefolder:/data/pets")
    assert (parsed.kind, parsed.name) == ("imagefolder", "/data/pets")


@pytest.mark.parametrize(
    "name", ["cifar10", "vtab/cifar10", "wds/", "wds/../etc", "wds/a b", "imagefolder:", "hf:x"]
)
def test_invalid_names_list_valid_forms(name):
    with pytest.raises(ConfigError) as info:
        parse_dataset_name(name)
    assert "wds/" in str(info.value) or name == "imagefolder:"
    if name == "cifar10":
        assert "Did you mean 'wds/cifar10'?" in str(info.value)
    if name in ("vtab/cifar10", "hf:x"):
        assert "imagefolder:<path>" in str(info.value)


def test_read_dataset_list(tmp_path):
    listing = tmp_path / "datasets.txt"
    listing.write_text(
        "# Rep2Rep style list\nwds/vtab/cifar10\n\n  wds/cars   # trailing comment\n"
        "imagefolder:/data/pets\nwds/vtab/cifar10\n"
    )
    names = read_dataset_list(["wds/digits", str(listing), "wds/cars"])
    assert names == ["wds/digits", "wds/vtab/cifar10", "wds/cars", "imagefolder:/data/pets"]


def test_read_dataset_list_errors(tmp_path):
    listing = tmp_path / "bad.txt"
    listing.write_text("wds/digits\n\ncifar100\n")
    with pytest.raises(ConfigError, match=r"bad\.txt, line 3: unknown dataset name 'cifar100'"):
        read_dataset_list([str(listing)])
    with pytest.raises(MissingInputError, match="missing.txt"):
        read_dataset_list([str(tmp_path / "missing.txt")])
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no dataset names"):
        read_dataset_list([str(tmp_path / "empty.txt")])


def test_digits_is_in_the_builder_registry():
    assert {"digits": build_digits} == DATASET_BUILDERS


def test_load_dataset_builds_digits_on_first_use(tmp_path):
    location = ProjectLocation.resolve(tmp_path)
    ds = load_dataset("wds/digits", "val", location=location)
    assert isinstance(ds, WdsDataset) and len(ds) == 359 and ds.name == "wds/digits"
    assert (location.wds_dataset_dir("digits") / "build_info.json").is_file()


def test_load_dataset_applies_saved_subset(digits_root, tmp_path):
    location = ProjectLocation.resolve(tmp_path)  # own root: the subset file is written there
    shutil.copytree(digits_root.wds_dataset_dir("digits"), location.wds_dataset_dir("digits"))
    ds = load_dataset("wds/digits", "test", location=location, max_samples=50, seed=2)
    full = load_dataset("wds/digits", "test", location=location)
    expected = stratified_subset(full.labels, max_samples=50, seed=2)
    assert len(ds) == 50 and ds.keys == [full.keys[i] for i in expected]
    assert np.array_equal(ds.source_indices, expected)
    assert np.bincount(ds.labels, minlength=10).tolist() == [5] * 10
    record = json.loads(location.subset_indices_file("wds/digits", "test").read_text())
    assert record["keys"] == ds.keys
    assert ds[0].key == ds.keys[0] and ds[0].index == 0


def test_load_imagefolder(tmp_path, monkeypatch):
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / "imgs" / split / name).mkdir(parents=True)
            Image.new("RGB", (2, 2)).save(tmp_path / "imgs" / split / name / "0.png")
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("imagefolder:imgs", "train", location=ProjectLocation.resolve(tmp_path / "r"))
    assert isinstance(ds, ImageFolderDataset) and ds.keys == ["a/0.png", "b/0.png"]
    assert ds.root == tmp_path / "imgs" and ds.name == "imagefolder:imgs"


def test_missing_wds_dataset_suggests_download(tmp_path):
    location = ProjectLocation.resolve(tmp_path)
    with pytest.raises(MissingInputError) as info:
        load_dataset("wds/vtab/cifar10", "test", location=location)
    message = str(info.value)
    assert str(location.wds_dataset_dir("vtab/cifar10")) in message
    assert "download_webdatasets.py --datasets wds/vtab/cifar10" in message
