"""data/imagefolder.py: ImageFolder trees written with PIL, checked against torchvision."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sim_consistency.data import ImageFolderDataset
from sim_consistency.errors import DataError, MissingInputError

COLOURS = {"cat": (200, 10, 10), "dog": (10, 200, 10), "eel": (10, 10, 200)}


@pytest.fixture
def tree(tmp_path):
    """root/{train,test}/{cat,dog,eel}/… with a nested folder, odd extensions and a stray file."""
    root = tmp_path / "pets"
    for split, n in (("train", 3), ("test", 2)):
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (5, 4), colour).save(folder / f"img_{i}.png")
    Image.new("L", (6, 6), 128).save(root / "train" / "cat" / "b_gray.JPG", format="JPEG")
    (root / "train" / "dog" / "nested").mkdir()
    Image.new("RGB", (3, 3), (1, 2, 3)).save(root / "train" / "dog" / "nested" / "deep.webp")
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    return root


def test_rows_follow_torchvision_imagefolder_order(tree):
    """Golden order of torchvision's ImageFolder (classes sorted; per class, os.walk sorted and
    file names sorted), written out instead of importing torchvision (7 s here)."""
    ds = ImageFolderDataset(tree, "train")
    assert ds.classnames == ["cat", "dog", "eel"]
    assert ds.keys == [
        "cat/b_gray.JPG",
        "cat/img_0.png",
        "cat/img_1.png",
        "cat/img_2.png",
        "dog/img_0.png",
        "dog/img_1.png",
        "dog/img_2.png",
        "dog/nested/deep.webp",
        "eel/img_0.png",
        "eel/img_1.png",
        "eel/img_2.png",
    ]
    assert ds.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 3
    assert ds.name == f"imagefolder:{tree}" and ds.split == "train" and ds.n_classes == 3


def test_images_decode_to_rgb_and_subset(tree):
    ds = ImageFolderDataset(tree, "test", name="imagefolder:pets", transform=np.asarray)
    assert len(ds) == 6
    for i in range(len(ds)):
        sample = ds[i]
        assert sample.index == i and sample.image.shape == (4, 5, 3)
        assert tuple(sample.image[0, 0]) == COLOURS[ds.classnames[sample.label]]
    gray = ImageFolderDataset(tree, "train")[0]
    assert gray.key == "cat/b_gray.JPG" and gray.image.mode == "RGB"
    view = ds.subset([4, 1])
    assert view.keys == [ds.keys[4], ds.keys[1]] and view[0].index == 0
    assert ds.path_of(1) == tree / "test" / ds.keys[1]
    assert "imagefolder:pets [test]: 6 samples" in ds.describe()


def test_missing_path_and_split(tmp_path, tree):
    with pytest.raises(MissingInputError, match="nowhere"):
        ImageFolderDataset(tmp_path / "nowhere", "train")
    with pytest.raises(MissingInputError, match=r"split 'val'.*available splits: test, train"):
        ImageFolderDataset(tree, "val")


def test_empty_split_and_empty_class(tmp_path, tree):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders"):
        ImageFolderDataset(tmp_path / "empty", "train")
    (tree / "test" / "fox").mkdir()
    (tree / "test" / "fox" / "readme.md").write_text("no images here")
    with pytest.raises(DataError, match=r"without images: fox"):
        ImageFolderDataset(tree, "test")


def test_undecodable_image_names_file(tree):
    bad = tree / "test" / "dog" / "img_1.png"
    bad.write_bytes(b"not a png at all")
    ds = ImageFolderDataset(tree, "test")
    row = ds.keys.index("dog/img_1.png")
    with pytest.raises(DataError) as info:
        ds[row]
    assert str(bad) in str(info.value) and "'dog/img_1.png'" in str(info.value)
