"""data/subsets.py: seeded stratified subsets and their saved index files."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from sim_consistency.data import keys_fingerprint, load_or_create_subset, stratified_subset
from sim_consistency.errors import ConfigError
from sim_consistency.project import ProjectLocation

# 4 classes of very different sizes: 50, 30, 8, 2 rows, interleaved
LABELS = np.random.default_rng(7).permutation(np.repeat([0, 1, 2, 3], [50, 30, 8, 2]))
KEYS = [f"k{i:03d}" for i in range(LABELS.size)]


def counts(indices, labels=LABELS):
    return np.bincount(labels[indices], minlength=4)


def test_no_limits_means_all_rows():
    assert np.array_equal(stratified_subset(LABELS), np.arange(LABELS.size))


def test_deterministic_sorted_unique_and_seeded():
    a = stratified_subset(LABELS, max_samples=20, seed=3)
    b = stratified_subset(LABELS, max_samples=20, seed=3)
    c = stratified_subset(LABELS, max_samples=20, seed=4)
    assert a.dtype == np.int64 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(a, np.unique(a))
    state = np.random.get_state()[1].copy()
    stratified_subset(LABELS, max_samples=20, seed=3)
    assert np.array_equal(np.random.get_state()[1], state)  # no global RNG


def test_rep2rep_cap_is_ceil_max_over_classes():
    # cap = ceil(40 / 4) = 10: classes with fewer rows keep all of them
    indices = stratified_subset(LABELS, max_samples=40)
    assert counts(indices).tolist() == [10, 10, 8, 2]
    # cap = ceil(10 / 4) = 3 -> 3 + 3 + 3 + 2 = 11 rows, trimmed to 10 by dropping one
    # last-ranked draw of a class that keeps 3
    indices = stratified_subset(LABELS, max_samples=10, seed=0)
    assert indices.size == 10
    assert sorted(counts(indices).tolist()) == [2, 2, 3, 3]
    assert counts(indices)[3] == 2


def test_explicit_cap_and_trim():
    assert counts(stratified_subset(LABELS, per_class_cap=5)).tolist() == [5, 5, 5, 2]
    trimmed = stratified_subset(LABELS, per_class_cap=20, max_samples=30, seed=1)
    assert trimmed.size == 30
    assert counts(trimmed).tolist() == [10, 10, 8, 2]  # balanced trim: rank by rank
    assert stratified_subset(LABELS, max_samples=1000).size == LABELS.size


def test_rows_come_from_their_class_uniformly():
    # over many seeds every row of the big class gets picked: a draw, not a prefix
    picked = set()
    for seed in range(40):
        picked |= {
            i for i in stratified_subset(LABELS, per_class_cap=5, seed=seed) if LABELS[i] == 0
        }
    assert len(picked) == 50


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_invalid_limits(bad):
    with pytest.raises(ConfigError, match="positive integer"):
        stratified_subset(LABELS, max_samples=bad)
    with pytest.raises(ConfigError, match="positive integer"):
        stratified_subset(LABELS, per_class_cap=bad)


def test_invalid_labels():
    with pytest.raises(ConfigError, match="1-D integer"):
        stratified_subset(np.zeros((3, 2), dtype=int), max_samples=2)
    with pytest.raises(ConfigError, match="1-D integer"):
        stratified_subset(np.array([0.5, 1.5]), max_samples=2)


# -- saved subsets -----------------------------------------------------------------------------


@pytest.fixture
def location(tmp_path):
    return ProjectLocation.resolve(tmp_path)


def make(location, keys=KEYS, labels=LABELS, **params):
    params = {"max_samples": 20, "per_class_cap": None, "seed": 0, **params}
    return load_or_create_subset(location, "wds/toy", "test", keys, labels, **params)


def test_file_contents(location):
    indices = make(location)
    path = location.subset_indices_file("wds/toy", "test")
    assert path == location.root / "datasets/subsets/wds_toy/subset_indices_test.json"
    record = json.loads(path.read_text())
    assert record["params"] == {
        "method": "stratified_v1",
        "max_samples": 20,
        "per_class_cap": None,
        "seed": 0,
    }
    assert record["dataset"] == "wds/toy" and record["split"] == "test"
    # cap ceil(20 / 4) = 5 per class: 5 + 5 + 5 + 2 rows, fewer than max_samples (Rep2Rep rule)
    assert record["n_source_rows"] == LABELS.size and record["n_samples"] == 17
    assert record["source_keys_sha256"] == keys_fingerprint(KEYS)
    assert record["indices"] == indices.tolist()
    assert record["keys"] == [KEYS[i] for i in indices]
    assert np.array_equal(indices, stratified_subset(LABELS, max_samples=20, seed=0))
    assert not list(path.parent.glob("*.partial"))


def test_reused_when_params_and_source_match(location, caplog):
    first = make(location)
    path = location.subset_indices_file("wds/toy", "test")
    record = json.loads(path.read_text())
    # prove reuse: a hand-edited (still consistent) selection is returned as saved
    record["indices"], record["keys"] = [0, 1, 2], KEYS[:3]
    path.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING):
        again = make(location)
    assert again.tolist() == [0, 1, 2] and not caplog.records
    assert first.size == 17


@pytest.mark.parametrize(
    "change",
    [
        {"max_samples": 12},
        {"seed": 1},
        {"per_class_cap": 4},
        {"keys": [f"other{i}" for i in range(LABELS.size)]},
        {"labels": np.sort(LABELS)},
    ],
    ids=["max_samples", "seed", "per_class_cap", "keys", "labels"],
)
def test_recomputed_with_warning_when_stale(location, caplog, change):
    make(location)
    path = location.subset_indices_file("wds/toy", "test")
    with caplog.at_level(logging.WARNING):
        indices = make(location, **change)
    assert "stale subset file" in caplog.text and str(path) in caplog.text
    record = json.loads(path.read_text())
    assert record["indices"] == indices.tolist()
    params = {"max_samples": 20, "per_class_cap": None, "seed": 0}
    params.update({k: v for k, v in change.items() if k in params})
    labels = change.get("labels", LABELS)
    assert np.array_equal(indices, stratified_subset(labels, **params))


@pytest.mark.parametrize("damage", ["not json", '{"indices": [1]}', "tampered_keys"])
def test_damaged_file_is_recomputed(location, caplog, damage):
    good = make(location)
    path = location.subset_indices_file("wds/toy", "test")
    if damage == "tampered_keys":
        record = json.loads(path.read_text())
        record["keys"][0] = "k999"
        path.write_text(json.dumps(record))
    else:
        path.write_text(damage)
    with caplog.at_level(logging.WARNING):
        assert np.array_equal(make(location), good)
    assert "stale subset file" in caplog.text
    assert json.loads(path.read_text())["keys"] == [KEYS[i] for i in good]


def test_no_subset_requested_writes_nothing(location):
    indices = make(location, max_samples=None)
    assert np.array_equal(indices, np.arange(LABELS.size))
    assert not location.subsets.exists()


def test_default_cap_matches_rep2rep_on_large_request(location):
    indices = make(location, max_samples=10_000)
    assert indices.size == LABELS.size  # cap ceil(10000/4) exceeds every class
    assert math.ceil(10_000 / 4) == 2500
