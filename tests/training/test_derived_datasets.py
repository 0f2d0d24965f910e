"""Datasets derived from digits (second dataset of the consistency study): built, aligned, stable."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sim_consistency.data import load_dataset
from sim_consistency.data.digits import build_digits, digits_pixels
from sim_consistency.data.digits.derived import (
    DIGITS_VARIANTS,
    DigitsVariant,
    noisy_values,
    rotated_values,
)
from sim_consistency.data.resolve import DERIVED_DATASET_BUILDERS
from sim_consistency.project import ProjectLocation


@pytest.fixture(scope="module")
def derived_root(tmp_path_factory) -> ProjectLocation:
    """A project root where every derived dataset was built on first use (by load_dataset)."""
    location = ProjectLocation.resolve(tmp_path_factory.mktemp("derived")).create()
    for name in DIGITS_VARIANTS:
        load_dataset(f"wds/{name}", "test", location=location)
    return location


def _gray(image: Image.Image) -> np.ndarray:
    return np.asarray(image)[:, :, 0]


def test_every_variant_is_registered_for_build_on_first_use():
    for name in DIGITS_VARIANTS:
        assert name in DERIVED_DATASET_BUILDERS


@pytest.mark.parametrize("name", sorted(DIGITS_VARIANTS))
def test_rows_keys_and_labels_align_with_digits(derived_root, digits_root, name):
    for split in ("train", "val", "test"):
        derived = load_dataset(f"wds/{name}", split, location=derived_root)
        original = load_dataset("wds/digits", split, location=digits_root)
        assert derived.keys == original.keys
        assert np.array_equal(derived.labels, original.labels)
        assert derived.classnames == original.classnames
    info = json.loads((derived_root.wds_dataset_dir(name) / "build_info.json").read_text())
    assert info["dataset"] == f"wds/{name}" and info["variant"]["name"] == name


def test_rotated_images_are_exact_rotations(derived_root, digits_root):
    rotated = load_dataset("wds/digits_rotated", "val", location=derived_root)
    original = load_dataset("wds/digits", "val", location=digits_root)
    for i in (0, 7, len(original) - 1):
        assert np.array_equal(_gray(rotated[i].image), np.rot90(_gray(original[i].image)))


def test_noisy_images_differ_but_stay_close(derived_root, digits_root):
    noisy = load_dataset("wds/digits_noisy", "test", location=derived_root)
    original = load_dataset("wds/digits", "test", location=digits_root)
    diffs = [
        _gray(noisy[i].image).astype(float) - _gray(original[i].image).astype(float)
        for i in range(20)
    ]
    spread = np.std(np.concatenate([d.ravel() for d in diffs]))
    assert 10 < spread < 60  # sigma 2 of 16 is ~32 grey levels, clipped at 0 and 255


def test_transforms_are_deterministic_and_shape_preserving():
    images = np.random.default_rng(5).integers(0, 17, size=(4, 8, 8)).astype(np.float64)
    assert np.array_equal(noisy_values(images, seed=0), noisy_values(images, seed=0))
    assert not np.array_equal(noisy_values(images, seed=0), noisy_values(images, seed=1))
    noisy = noisy_values(images)
    assert noisy.shape == images.shape and noisy.min() >= 0 and noisy.max() <= 16
    assert np.array_equal(rotated_values(rotated_values(images)), images[:, ::-1, ::-1])
    assert np.array_equal(
        digits_pixels(rotated_values(images)), np.rot90(digits_pixels(images), axes=(1, 2))
    )


def test_rebuild_is_byte_identical_and_other_params_rebuild(tmp_path, derived_root):
    location = ProjectLocation.resolve(tmp_path).create()
    variant = DIGITS_VARIANTS["digits_noisy"]
    folder = build_digits(location, variant=variant)
    shard = folder / "train" / "0.tar"
    assert (
        shard.read_bytes()
        == (derived_root.wds_dataset_dir("digits_noisy") / "train/0.tar").read_bytes()
    )
    before = shard.stat().st_mtime_ns
    assert build_digits(location, variant=variant) == folder
    assert shard.stat().st_mtime_ns == before  # complete and current: reused
    other = DigitsVariant("digits_noisy", noisy_values, {"sigma": 2.0, "seed": 1})
    build_digits(location, variant=other)  # same folder, other recipe: rebuilt, not reused
    assert (
        shard.read_bytes()
        != (derived_root.wds_dataset_dir("digits_noisy") / "train/0.tar").read_bytes()
    )
    info = json.loads((folder / "build_info.json").read_text())
    assert info["variant"]["params"]["seed"] == 1
