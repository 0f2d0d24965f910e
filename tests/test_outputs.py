"""One content-key module: digests, stored keys and plan reasons (sim_consistency/outputs.py)."""

from __future__ import annotations

import hashlib
import json

import h5py
import pytest

from sim_consistency.io import partial_path
from sim_consistency.outputs import (
    count_reused,
    file_digest,
    folder_plan_reason,
    json_digest,
    plan_reason,
    stored_key,
)


def test_json_digest_keeps_the_values_of_the_helpers_it_replaces(tmp_path):
    payload = {"b": [1, 2.5, None], "a": {"z": "x", "y": True}}
    # The similarity/merging/extraction helpers (default=str) and the training/probe ones
    # (JSON-native payloads, no default) all hashed exactly this.
    assert (
        json_digest(payload)
        == hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    )
    path = tmp_path / "p"
    assert (
        json_digest({"p": path})
        == hashlib.sha256(json.dumps({"p": str(path)}, sort_keys=True).encode()).hexdigest()
    )
    assert json_digest({"a": 1}) != json_digest({"a": 2})


def test_file_digest_is_the_content_only(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    data = bytes(range(256)) * 9000  # > one 1 MiB chunk
    a.write_bytes(data)
    b.write_bytes(data)
    assert file_digest(a) == file_digest(b) == hashlib.sha256(data).hexdigest()
    b.write_bytes(data[:-1] + b"\x00")
    assert file_digest(a) != file_digest(b)


def test_stored_key_reads_json_folders_and_hdf5_attrs(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    assert stored_key(folder) is None
    (folder / "metadata.json").write_text(json.dumps({"content_key": "abc"}))
    assert stored_key(folder) == stored_key(folder / "metadata.json") == "abc"
    (folder / "results.json").write_text("{not json")
    assert stored_key(folder / "results.json") is None
    (folder / "list.json").write_text("[1, 2]")
    assert stored_key(folder / "list.json") is None
    with h5py.File(folder / "grids.h5", "w") as f:
        f.attrs["content_key"] = "k5"
    assert stored_key(folder / "grids.h5") == "k5"
    (folder / "broken.h5").write_bytes(b"not hdf5")
    assert stored_key(folder / "broken.h5") is None
    assert stored_key(folder / "absent.h5") is None


@pytest.mark.parametrize(
    ("stored", "force", "complete", "expected"),
    [
        ("k", True, True, "forced"),
        (None, False, True, "missing"),
        ("k", False, False, "missing"),
        ("old", False, True, "stale"),
        ("k", False, True, None),
    ],
)
def test_plan_reason(stored, force, complete, expected):
    with count_reused() as reused:
        assert plan_reason("x", "k", stored, force=force, complete=complete) == expected
    assert reused == ([] if expected else ["x"])


def test_folder_plan_reason_needs_every_file_and_removes_partials(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "metadata.json").write_text(json.dumps({"content_key": "k"}))
    leftover = partial_path(folder / "a.csv")
    leftover.write_text("half")
    assert folder_plan_reason(folder, "k", ("a.csv",), False) == "missing"
    assert not leftover.exists()
    (folder / "a.csv").write_text("done")
    assert folder_plan_reason(folder, "k", ("a.csv",), False) is None
    assert folder_plan_reason(folder, "other", ("a.csv",), False) == "stale"
    assert folder_plan_reason(folder, "k", ("a.csv",), True) == "forced"
