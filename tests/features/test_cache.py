"""Feature cache writer/reader: layout, float16 overflow fallback, refusal of partial files."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest

from sim_consistency.errors import CacheError, MissingInputError, NonFiniteError
from sim_consistency.features import FeatureCacheWriter, load_aligned_blocks, open_cache
from sim_consistency.features.cache import read_cache_attrs
from sim_consistency.io import atomic_output


def _write(path, keys, blocks, logits=None, dtype="float16", batch=3, attrs=None):
    dims = {name: arr.shape[1] for name, arr in blocks.items()}
    n_classes = None if logits is None else logits.shape[1]
    with atomic_output(path) as tmp:
        writer = FeatureCacheWriter(tmp, block_dims=dims, n_classes=n_classes, storage_dtype=dtype)
        for start in range(0, len(keys), batch):
            sl = slice(start, start + batch)
            writer.append(
                keys[sl],
                np.arange(len(keys))[sl] % 3,
                {k: v[sl] for k, v in blocks.items()},
                None if logits is None else logits[sl],
            )
        writer.finalize(
            {"model_id": "m", "content_key": "abc", "recipe": {"source": "timm"}, **(attrs or {})}
        )
    return path


def test_roundtrip_layout_and_attrs(tmp_path):
    rng = np.random.default_rng(0)
    keys = [f"s{i:04d}" for i in range(10)]
    blocks = {
        "blocks.0": rng.normal(size=(10, 4)).astype(np.float32),
        "blocks.1": rng.normal(size=(10, 6)).astype(np.float32),
    }
    logits = rng.normal(size=(10, 3)).astype(np.float32)
    path = _write(tmp_path / "m.h5", keys, blocks, logits)
    with h5py.File(path, "r") as f:
        assert f["keys"].shape == (10,) and f["labels"].dtype == np.int64
        assert f["blocks/blocks.0"].dtype == np.float16 and f["logits"].dtype == np.float32
        assert f.attrs["complete"] and f.attrs["n_rows"] == 10
    with open_cache(path) as cache:
        assert list(cache.keys) == keys
        assert cache.labels.tolist() == [i % 3 for i in range(10)]
        assert cache.block_names == ["blocks.0", "blocks.1"]
        np.testing.assert_array_equal(
            cache.block("blocks.1"), blocks["blocks.1"].astype(np.float16).astype(np.float32)
        )
        np.testing.assert_array_equal(cache.logits, logits)
        assert cache.attrs["recipe"] == {"source": "timm"}
        assert cache.content_key == "abc"
        with pytest.raises(CacheError, match="no block 'nope'"):
            cache.block("nope")
    assert read_cache_attrs(path)["model_id"] == "m"


def test_float16_overflow_falls_back_to_float32(tmp_path):
    keys = [f"k{i}" for i in range(6)]
    big = np.ones((6, 2), np.float32)
    big[4, 1] = 70000.0  # arrives in the second batch, after float16 rows were written
    small = np.full((6, 2), 0.5, np.float32)
    path = _write(tmp_path / "o.h5", keys, {"a": big, "b": small})
    with open_cache(path) as cache:
        assert cache.block_attrs("a")["overflow_fallback"] is True
        assert cache.block_attrs("b")["overflow_fallback"] is False
        assert cache.block("a", dtype=None).dtype == np.float32
        np.testing.assert_array_equal(cache.block("a"), big)
        assert cache.block("b", dtype=None).dtype == np.float16
        assert cache.attrs["block_dtypes"] == {"a": "float32", "b": "float16"}


def test_nonfinite_values_are_refused_and_leave_nothing(tmp_path):
    bad = np.ones((3, 2), np.float32)
    bad[1, 0] = np.nan
    with pytest.raises(NonFiniteError, match="block 'a' has NaN/inf"):
        _write(tmp_path / "n.h5", ["a", "b", "c"], {"a": bad})
    assert list(tmp_path.iterdir()) == []


def test_partial_and_incomplete_files_are_refused(tmp_path):
    keys = ["a", "b"]
    blocks = {"x": np.zeros((2, 2), np.float32)}
    partial = tmp_path / "m.h5.partial"
    writer = FeatureCacheWriter(partial, block_dims={"x": 2}, n_classes=None)
    writer.append(keys, [0, 1], blocks)
    writer.close()  # killed before finalize
    with pytest.raises(CacheError, match="partial file"):
        open_cache(partial)
    incomplete = tmp_path / "i.h5"
    partial.rename(incomplete)
    with pytest.raises(CacheError, match="incomplete feature cache"):
        open_cache(incomplete)
    assert read_cache_attrs(incomplete) is None
    (tmp_path / "garbage.h5").write_bytes(b"not hdf5")
    with pytest.raises(CacheError, match="not a readable HDF5"):
        open_cache(tmp_path / "garbage.h5")
    assert read_cache_attrs(tmp_path / "garbage.h5") is None
    with pytest.raises(MissingInputError, match="run scripts/feature_extraction.py"):
        open_cache(tmp_path / "absent.h5")


def test_load_aligned_blocks_checks_keys(tmp_path):
    blocks = {"x": np.arange(8, dtype=np.float32).reshape(4, 2)}
    a = _write(tmp_path / "a.h5", ["k0", "k1", "k2", "k3"], blocks)
    b = _write(tmp_path / "b.h5", ["k0", "k1", "k2", "k3"], {"x": blocks["x"] * 2})
    c = _write(tmp_path / "c.h5", ["k0", "k1", "kX", "k3"], blocks)
    keys, labels, feats = load_aligned_blocks([a, b])
    assert list(keys) == ["k0", "k1", "k2", "k3"] and len(feats) == 2
    np.testing.assert_array_equal(feats[1], 2 * blocks["x"])
    with pytest.raises(
        CacheError, match=r"a\.h5 and .*c\.h5: /keys differ \(row 2: 'k2' vs 'kX'\)"
    ):
        load_aligned_blocks([a, c])


# -- integrity: checksums, schema, failed writes ----------------------------------------------


def _chunk_offset(path, dataset: str) -> int:
    with h5py.File(path, "r") as f:
        return f[dataset].id.get_chunk_info(0).byte_offset


def test_a_flipped_byte_in_stored_features_is_detected_on_read(tmp_path):
    from sim_consistency.errors import CacheIntegrityError
    from sim_consistency.features import inspect_cache

    rng = np.random.default_rng(0)
    keys = [f"s{i}" for i in range(8)]
    path = _write(tmp_path / "m.h5", keys, {"x": rng.normal(size=(8, 4)).astype(np.float32)})
    assert inspect_cache(path, verify=True).is_valid
    offset = _chunk_offset(path, "blocks/x") + 5
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))
    assert inspect_cache(path).is_valid  # the cheap check (planners) reads no feature data
    status = inspect_cache(path, verify=True)
    assert not status.is_valid and "/blocks/x fails its checksum" in status.problem
    with (
        open_cache(path) as cache,
        pytest.raises(CacheIntegrityError, match=r"/blocks/x fails .*moved to m\.h5\.corrupt"),
    ):
        cache.block("x")
    # The reader set the file aside, so the next extraction rebuilds it ("no such file").
    assert not path.exists() and inspect_cache(path).problem == "no such file"
    corrupt = tmp_path / "m.h5.corrupt"
    assert "/blocks/x fails its checksum" in inspect_cache(corrupt, verify=True).problem


def test_quarantine_leaves_a_file_that_replaced_the_corrupt_one(tmp_path):
    from sim_consistency.features import quarantine_cache

    path = _write(tmp_path / "m.h5", ["a", "b"], {"x": np.zeros((2, 2), np.float32)})
    old_inode = path.stat().st_ino
    rebuilt = _write(tmp_path / "new.h5", ["a", "b"], {"x": np.ones((2, 2), np.float32)})
    rebuilt.replace(path)  # a concurrent rebuild finished meanwhile
    assert "replaced" in quarantine_cache(path, inode=old_inode)
    assert path.exists() and not (tmp_path / "m.h5.corrupt").exists()


def test_edited_keys_fail_their_digest(tmp_path):
    from sim_consistency.errors import CacheIntegrityError

    path = _write(tmp_path / "m.h5", ["a", "b", "c"], {"x": np.zeros((3, 2), np.float32)})
    with h5py.File(path, "r+") as f:
        f["keys"][1] = "z"
    with open_cache(path) as cache, pytest.raises(CacheIntegrityError, match="keys_sha256"):
        _ = cache.keys


@pytest.mark.parametrize(
    "make",
    [
        lambda f: f.attrs.update({"complete": True}),  # the case: nothing but complete
        lambda f: f.attrs.update({"complete": True, "schema_version": 1, "model_id": "m",
                                  "content_key": "k", "block_names": '["x"]', "n_rows": 2}),
        lambda f: f.attrs.update({"complete": True, "schema_version": 2, "model_id": "m",
                                  "content_key": "k", "block_names": '["x"]', "n_rows": 2}),
    ],
    ids=["no_attrs", "old_schema", "no_datasets"],
)  # fmt: skip
def test_foreign_files_are_named_never_a_key_error(tmp_path, make):
    from sim_consistency.errors import CacheIntegrityError
    from sim_consistency.features import inspect_cache, require_cache_attrs

    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        make(f)
    status = inspect_cache(path)
    assert not status.is_valid and status.problem
    assert read_cache_attrs(path) is None
    with pytest.raises(CacheIntegrityError, match="foreign.h5"):
        open_cache(path)
    with pytest.raises(CacheIntegrityError, match="rerun scripts/feature_extraction.py"):
        require_cache_attrs(path)


def test_nonfinite_logits_are_refused(tmp_path):
    logits = np.zeros((3, 2), np.float32)
    logits[2, 1] = np.inf
    with pytest.raises(
        NonFiniteError, match=r"logits has NaN/inf values in 1 row\(s\), the first at row 2"
    ):
        _write(tmp_path / "n.h5", ["a", "b", "c"], {"x": np.ones((3, 2), np.float32)}, logits)
    assert list(tmp_path.iterdir()) == []


_FAILING_WRITER = """
import sys
import numpy as np
from sim_consistency.features import FeatureCacheWriter
from sim_consistency.io import atomic_output
rows = np.ones((32, 64), np.float32)
try:
    with atomic_output(sys.argv[1]) as tmp:
        writer = FeatureCacheWriter(tmp, block_dims={"a": 64, "b": 64}, n_classes=10)
        for i in range(60):
            writer.append([f"k{i}_{j}" for j in range(32)], np.zeros(32), {"a": rows, "b": rows},
                          np.ones((32, 10), np.float32))
        writer.finalize({"model_id": "m", "content_key": "k"})
except Exception as exc:
    print(type(exc).__name__, str(exc))
"""


def test_an_injected_write_failure_raises_and_never_leaves_a_complete_file(tmp_path, monkeypatch):
    """HDF5 reporting a failed write (errno 28) when the data is flushed: nothing is kept."""
    from sim_consistency.errors import OutputWriteError

    calls = {"n": 0}
    flush = h5py.File.flush

    def failing_flush(self):
        calls["n"] += 1
        if calls["n"] >= 2:  # the first flush is at creation
            raise RuntimeError("Unable to synchronously flush file (file write failed: errno = 28)")
        flush(self)

    monkeypatch.setattr(h5py.File, "flush", failing_flush)
    keys = [f"k{i}" for i in range(9)]
    with pytest.raises(OutputWriteError, match="m.h5: cannot write: no space left on device"):
        _write(tmp_path / "m.h5", keys, {"x": np.ones((9, 2), np.float32)})
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_mid_write_raises_cleanly_and_never_leaves_a_complete_file(small_tmpfs):
    """A real full disk (400 KiB tmpfs, no size hint so the early check cannot refuse): HDF5
    fails inside its chunk-cache flush; the process must end through the error, not SIGSEGV."""
    target = small_tmpfs / "m.h5"
    result = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", _FAILING_WRITER, str(target)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]  # was -11 (SIGSEGV)
    assert result.stdout.startswith("OutputWriteError"), result.stdout + result.stderr[-2000:]
    assert f"{target}: cannot write: no space left on device" in result.stdout
    assert result.stderr == ""  # no h5py destructor tracebacks either
    assert list(small_tmpfs.iterdir()) == []
