"""Rep2Rep's dataset lists load unchanged; its derived names resolve as Rep2Rep builds them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sim_consistency.data import load_dataset, read_dataset_list
from sim_consistency.data.download import read_webdataset_names
from sim_consistency.data.rep2rep_datasets import CIFAR100_SUPERCLASSES, cifar100_coarse_map
from sim_consistency.errors import MissingInputError
from sim_consistency.project import ProjectLocation
from tests.data.test_wds import good, write_wds

REFERENCE = Path("/work/shared/reference/rep2rep_configs")
FIXTURES = Path(__file__).parents[1] / "fixtures" / "rep2rep"
LIST_FILES = [FIXTURES / "webdatasets_all.txt"] + sorted(REFERENCE.glob("webdatasets_*.txt"))

# Rep2Rep's clip_benchmark/data/datasets/cifar_coarse.py: coarse label of fine labels 0..99.
REP2REP_COARSE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]  # fmt: skip


@pytest.mark.parametrize("path", [p for p in LIST_FILES if p.is_file()], ids=lambda p: p.name)
def test_rep2rep_list_files_load_unchanged(path):
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    assert read_dataset_list([str(path)]) == list(dict.fromkeys(lines))


def test_reference_lists_are_there():
    assert (FIXTURES / "webdatasets_all.txt").is_file()
    if REFERENCE.is_dir():
        assert len([p for p in LIST_FILES if p.is_file()]) == 5


def test_download_list_maps_derived_names_to_their_webdatasets():
    names = read_webdataset_names([str(FIXTURES / "webdatasets_all.txt")])
    assert "wds/vtab/cifar100" in names and "wds/imagenet1k" in names
    assert not any(n.startswith("wds/entity") or "coarse" in n for n in names)


def test_cifar100_coarse_map_equals_rep2rep_table():
    assert cifar100_coarse_map().tolist() == REP2REP_COARSE
    assert list(CIFAR100_SUPERCLASSES)[0] == "aquatic mammals" and len(CIFAR100_SUPERCLASSES) == 20


def test_cifar100_coarse_relabels_the_cifar100_webdataset(tmp_path):
    location = ProjectLocation.resolve(tmp_path)
    fine = [0, 1, 55, 99, 47]  # apple, aquarium_fish, otter, worm, maple_tree
    write_wds(
        location.wds_dataset_dir("vtab/cifar100"),
        [[good(f"s{i}", label) for i, label in enumerate(fine)]],
        classnames=[f"c{i}" for i in range(100)],
    )
    ds = load_dataset("cifar100-coarse", "test", location=location)
    assert ds.name == "cifar100-coarse" and ds.n_classes == 20
    assert ds.keys == [f"s{i}" for i in range(5)]
    assert ds.labels.tolist() == [REP2REP_COARSE[f] for f in fine] == [4, 1, 0, 13, 17]
    assert ds[2].label == 0 and ds.classnames[17] == "trees"
    sub = load_dataset("cifar100-coarse", "test", location=location, max_samples=3)
    assert set(sub.keys) <= set(ds.keys) and sub.n_classes == 20


def test_breeds_task_filters_by_split_and_maps_to_superclasses(tmp_path):
    location = ProjectLocation.resolve(tmp_path)
    task = {
        "train_classes": [1, 3],
        "test_classes": [2, 4],
        "superclass_mapping": {"1": 0, "3": 1, "2": 0, "4": 1},
        "superclass_names": ["animal", "thing"],
    }
    (location.datasets / "breeds").mkdir(parents=True)
    (location.datasets / "breeds" / "living17.json").write_text(json.dumps(task))
    rows = [good(f"k{i}", label) for i, label in enumerate([0, 1, 2, 3, 4, 3, 1])]
    folder = location.wds_dataset_dir("imagenet1k")
    write_wds(folder, [rows], split="train", classnames=[f"n{i}" for i in range(5)])
    _add_split(folder, rows, split="test")
    train = load_dataset("living17", "train", location=location)
    assert train.keys == ["k1", "k3", "k5", "k6"] and train.labels.tolist() == [0, 1, 1, 0]
    assert train.classnames == ["animal", "thing"] and train.name == "living17"
    test = load_dataset("living17", "test", location=location)
    assert test.keys == ["k2", "k4"] and test.labels.tolist() == [0, 1]


def _add_split(folder, rows, split="test"):
    import webdataset

    (folder / split).mkdir()
    with webdataset.TarWriter(str(folder / split / "0.tar")) as sink:
        for sample in rows:
            sink.write(sample)
    (folder / split / "nshards.txt").write_text("1\n")


def test_imagenet_subset_reads_torchvision_imagenet_folder_and_rep2rep_indices(tmp_path):
    location = ProjectLocation.resolve(tmp_path)
    root = location.datasets / "imagenet_torch"
    for wnid in ("n01", "n02"):
        for j in range(3):
            (root / "val" / wnid).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4)).save(root / "val" / wnid / f"{j}.png")
    (root / "imagenet-10k-val.json").write_text(json.dumps({"0": [2, 0], "1": [4]}))
    ds = load_dataset("imagenet-subset-10k", "test", location=location)  # test reads val
    assert ds.keys == ["n01/2.png", "n01/0.png", "n02/1.png"]
    assert np.array_equal(ds.labels, [0, 0, 1]) and ds.name == "imagenet-subset-10k"


@pytest.mark.parametrize(
    ("name", "looked_at", "how"),
    [
        ("cifar100-coarse", "datasets/wds/wds_vtab-cifar100", "--datasets wds/vtab/cifar100"),
        ("entity30", "datasets/breeds/entity30.json", "get_breeds_task('entity30')"),
        ("imagenet-subset-10k", "datasets/imagenet_torch/val", "torchvision's ImageNet"),
    ],
)
def test_missing_data_is_reported_when_needed_naming_name_place_and_remedy(
    tmp_path, name, looked_at, how
):
    location = ProjectLocation.resolve(tmp_path)
    assert read_dataset_list([name]) == [name]  # the name alone is fine
    with pytest.raises(MissingInputError) as info:
        load_dataset(name, "test", location=location)
    message = str(info.value)
    assert f"'{name}'" in message and str(tmp_path / looked_at) in message and how in message


def test_breeds_without_imagenet_names_the_webdataset(tmp_path):
    location = ProjectLocation.resolve(tmp_path)
    (location.datasets / "breeds").mkdir(parents=True)
    (location.datasets / "breeds" / "entity13.json").write_text(
        json.dumps({"train_classes": [0], "test_classes": [1], "superclass_mapping": {"0": 0}})
    )
    with pytest.raises(Exception, match="superclass_mapping"):
        load_dataset("entity13", "test", location=location)
    (location.datasets / "breeds" / "entity13.json").write_text(
        json.dumps(
            {"train_classes": [0], "test_classes": [1], "superclass_mapping": {"0": 0, "1": 0}}
        )
    )
    with pytest.raises(
        MissingInputError, match=r"'entity13'.*wds_imagenet1k.*--datasets wds/imagenet1k"
    ):
        load_dataset("entity13", "test", location=location)
