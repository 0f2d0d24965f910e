"""The HDF5 feature cache: one immutable file per model x dataset x split.

Layout (DESIGN.md, "Feature cache")::

    /keys            (n,)   str      webdataset __key__ (or relative path)
    /labels          (n,)   int64
    /blocks/<name>   (n, d) float16 | float32   pooled block output, blocks in forward order
    /logits          (n, C) float32  when the model has a classification head
    attrs: schema_version, model_id, content_key, recipe, weights_sha256, preprocessing,
           pooling, block_names, dtype, code_version, library_versions, n_rows, keys_sha256,
           complete

Integrity: every dataset is chunked with HDF5's ``fletcher32`` checksum filter, and the file is
written with the v1.10 format, whose object headers (attributes included) carry checksums too;
the variable-length keys, which sit outside the chunks, are covered by ``keys_sha256``. A
flipped byte therefore fails the read with :class:`~sim_consistency.errors.CacheIntegrityError`.

:class:`FeatureCacheWriter` appends batches to resizable datasets (memory does not grow with
the number of images) and is always used on a ``.partial`` file that the caller renames when
complete (see :func:`sim_consistency.io.atomic_output`). Every write is flushed and checked: a
failed HDF5 write raises (full disk: :class:`~sim_consistency.errors.OutputWriteError`), and
:meth:`FeatureCacheWriter.finalize` re-reads the whole file (shapes, row counts, checksums)
before it sets ``complete=True``. On a failed write the file is truncated before HDF5 closes it,
so the library can flush its metadata into the freed space instead of crashing at exit.

:func:`open_cache` is the lazy reader and :func:`inspect_cache` the planners' check; both
validate the file against the schema (version, attributes, datasets, row counts) and refuse
partial, incomplete or foreign files by name. Planners check only the schema, attributes and
row counts (no feature data is read, so planning costs the same for a 1 MB and a 300 MB cache);
checksums are verified as data is read, and a reader that finds a corrupt file renames it to
``<file>.corrupt`` (:func:`quarantine_cache`), so the next extraction rebuilds it. Extraction's
``--verify`` reads every existing cache in full while planning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from sim_consistency.errors import CacheError, CacheIntegrityError, MissingInputError
from sim_consistency.finite import check_finite
from sim_consistency.io import (
    PARTIAL_SUFFIX,
    check_free_space,
    raise_if_terminated,
    write_errno,
    write_error,
)

__all__ = [
    "SCHEMA_VERSION",
    "FLOAT16_MAX",
    "FeatureCacheWriter",
    "FeatureCache",
    "CacheStatus",
    "estimated_cache_bytes",
    "inspect_cache",
    "open_cache",
    "quarantine_cache",
    "read_cache_attrs",
    "require_cache_attrs",
    "load_aligned_blocks",
    "check_same_keys",
]

#: 2: fletcher32 on every dataset, v1.10 format (checksummed headers), keys_sha256.
SCHEMA_VERSION = 2
FLOAT16_MAX = 65504.0
_JSON_ATTRS = (
    "recipe",
    "preprocessing",
    "library_versions",
    "block_names",
    "subset",
    "block_pooling",
    "block_dtypes",
    "rep2rep",
)
_CHUNK_ROWS = 256
_LIBVER = ("v110", "v110")
#: Flush at most this often while appending (a full disk is then reported within seconds;
#: finalize flushes and verifies everything anyway).
_FLUSH_EVERY_S = 2.0
_REQUIRED_ATTRS = ("schema_version", "model_id", "content_key", "block_names", "n_rows")
_KEY_BYTES = 32  # per-row allowance for a key in the size estimate


def estimated_cache_bytes(
    n_rows: int, block_dims: Mapping[str, int], n_classes: int | None, storage_dtype: str
) -> int:
    """Return the bytes a cache of ``n_rows`` rows takes (blocks + logits + labels + keys)."""
    width = sum(block_dims.values()) * np.dtype(storage_dtype).itemsize
    width += (n_classes or 0) * 4 + 8 + _KEY_BYTES
    return n_rows * width


@contextlib.contextmanager
def _quiet_h5py_destructors() -> Iterator[None]:
    """Drop the "Exception ignored in h5py ObjectID.__dealloc__" reports of a failed write.

    When HDF5 cannot write (full disk), h5py reports it again from every object destructor
    that flushes, as tracebacks on stderr; the write itself raises, and that error is the one
    the user gets. Other unraisable exceptions go to the previous hook.
    """
    previous = sys.unraisablehook

    def hook(report: Any) -> None:
        if "h5py" not in repr(report.object) and "ObjectID" not in repr(report.object):
            previous(report)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _digest_keys(digest: Any, keys: Sequence[str]) -> None:
    for key in keys:
        digest.update(key.encode("utf-8"))
        digest.update(b"\n")


#: What to do about non-finite model outputs (the writer refuses them).
_HINT = "The model's outputs are not finite (check its weights and inputs)."


class FeatureCacheWriter:
    """Append batches of keys, labels, pooled blocks and logits to a new HDF5 file.

    Blocks are stored as ``storage_dtype`` (float16 by default). Before each float16 write the
    batch's max |x| is checked against 65504: a block that would overflow is converted to
    float32 for the whole file (rows already written are re-read and widened), and the fact is
    recorded in the block's attributes (``overflow_fallback``).

    Args:
        path: file to create (normally the ``.partial`` name).
        block_dims: ``{block_name: d}`` in forward order.
        n_classes: logits width, or ``None`` when the model has no head.
        storage_dtype: ``"float16"`` or ``"float32"``.
        expected_rows: optional size hint for chunking.
        float32_blocks: blocks always stored as float32 (the ``rep2rep`` representation, kept
            as Rep2Rep stores it).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        block_dims: Mapping[str, int],
        n_classes: int | None,
        storage_dtype: str = "float16",
        expected_rows: int | None = None,
        float32_blocks: Collection[str] = (),
    ) -> None:
        if storage_dtype not in ("float16", "float32"):
            raise ValueError(f"storage_dtype must be float16 or float32 (got {storage_dtype!r})")
        self.path = Path(path)
        #: The output named in messages: the final file, not its ``.partial``.
        self._output = Path(str(self.path).removesuffix(PARTIAL_SUFFIX))
        self.storage_dtype = storage_dtype
        self.block_names = list(block_dims)
        self._needed = None
        if expected_rows:
            self._needed = estimated_cache_bytes(
                expected_rows, block_dims, n_classes, storage_dtype
            )
            check_free_space(self.path, self._needed, what="the feature cache")
        self._keys_digest = hashlib.sha256()
        self._last_flush = time.monotonic()
        self.n_rows = 0
        self._block_dtype: dict[str, str] = {}
        self._ds: dict[str, h5py.Dataset] = {}
        self._file: h5py.File | None = None
        with self._guard():
            self._file = h5py.File(self.path, "w", locking=False, libver=_LIBVER)
            chunk = max(1, min(_CHUNK_ROWS, expected_rows or _CHUNK_ROWS))
            self._ds["keys"] = self._create("keys", (0,), h5py.string_dtype(), (chunk,))
            self._ds["labels"] = self._create("labels", (0,), np.int64, (chunk,))
            self._file.create_group("blocks")
            for name, dim in block_dims.items():
                dtype = "float32" if name in float32_blocks else storage_dtype
                ds = self._create(f"blocks/{name}", (0, dim), dtype, (chunk, dim))
                ds.attrs["overflow_fallback"] = False
                self._ds[f"blocks/{name}"] = ds
                self._block_dtype[name] = dtype
            if n_classes is not None:
                self._ds["logits"] = self._create(
                    "logits", (0, n_classes), np.float32, (chunk, n_classes)
                )
            self._file.flush()

    def _create(
        self, name: str, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...]
    ) -> h5py.Dataset:
        assert self._file is not None
        return self._file.create_dataset(
            name,
            shape=shape,
            maxshape=(None, *shape[1:]),
            dtype=dtype,
            chunks=chunks,
            # HDF5 filters cannot apply to variable-length strings: keys_sha256 covers /keys.
            fletcher32=h5py.check_string_dtype(np.dtype(dtype)) is None,
        )

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn any failed HDF5 call into an error that ends the write cleanly.

        h5py reports some failed writes (a full disk while the chunk cache is flushed) only as
        ignored warnings or as ``RuntimeError``; after one the library's state is broken and
        closing the file normally can crash the interpreter. So the file is truncated first
        (freeing its space), then closed, and the error raised: a named
        :class:`OutputWriteError` for a file-system refusal, else a :class:`CacheError`.
        """
        try:
            with _quiet_h5py_destructors():
                yield
        except (OSError, RuntimeError) as exc:
            if isinstance(exc, CacheError):
                raise
            with _quiet_h5py_destructors():
                self._abort()
            if write_errno(exc) is not None:
                raise write_error(
                    self.path, exc, needed=self._needed, what="the feature cache"
                ) from exc
            raise CacheError(
                f"{self.path}: HDF5 write failed ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else exc!r}); nothing was kept."
            ) from exc

    def _abort(self) -> None:
        """Give up on the file after a failed write without letting HDF5 crash the process.

        HDF5 still holds dirty metadata it could not write; if its close fails too, the library
        is left with a half-open file and h5py segfaults when the objects are released (or at
        exit). So HDF5's descriptor is pointed at a scratch file in the temporary folder first
        (its last writes land there), the cache file is truncated (freeing its space), and only
        then is the file closed.
        """
        if self._file is not None:
            with contextlib.ExitStack() as stack:
                try:
                    handle = int(self._file.id.get_vfd_handle())
                    scratch = stack.enter_context(tempfile.TemporaryFile())
                    os.dup2(scratch.fileno(), handle)
                except (OSError, RuntimeError, ValueError, TypeError):
                    pass  # no sec2 descriptor: fall back to truncating the file in place
                with contextlib.suppress(OSError):
                    os.truncate(self.path, 0)
                self._ds.clear()  # releasing a dataset flushes it: only now, into the scratch
                with contextlib.suppress(Exception):
                    self._file.close()
        self._ds.clear()
        self._file = None

    def append(
        self,
        keys: Sequence[str],
        labels: npt.ArrayLike,
        blocks: Mapping[str, np.ndarray],
        logits: np.ndarray | None = None,
    ) -> None:
        """Append one batch: ``keys`` (b,), ``labels`` (b,), ``blocks[name]`` (b, d) float32."""
        b = len(keys)
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (b,):
            raise ValueError(f"labels shape {labels.shape} does not match {b} keys")
        if set(blocks) != set(self.block_names):
            raise ValueError(f"batch blocks {sorted(blocks)} != cache blocks {self.block_names}")
        if self._file is None:
            raise CacheError(f"{self.path}: the writer is closed (an earlier write failed).")
        raise_if_terminated()
        start, stop = self.n_rows, self.n_rows + b
        values = {}
        for name in self.block_names:
            values[name] = np.asarray(blocks[name], dtype=np.float32)
            if values[name].shape[0] != b:
                raise ValueError(f"block {name}: {values[name].shape[0]} rows for {b} keys")
            check_finite(
                values[name], f"{self._output}: block '{name}'", hint=_HINT, first_row=start
            )
        if "logits" in self._ds:
            if logits is None:
                raise ValueError("this cache stores logits, but the batch has none")
            logit_values = np.asarray(logits, dtype=np.float32)
            check_finite(
                logit_values,
                f"{self._output}: the classification head's logits",
                hint=_HINT,
                first_row=start,
            )
        with self._guard():
            for name in ("keys", "labels"):
                self._ds[name].resize((stop,))
            self._ds["keys"][start:stop] = list(keys)
            self._ds["labels"][start:stop] = labels
            for name in self.block_names:
                if (
                    self._block_dtype[name] == "float16"
                    and values[name].size
                    and (float(np.abs(values[name]).max()) >= FLOAT16_MAX)
                ):
                    self._widen_to_float32(name)
                ds = self._ds[f"blocks/{name}"]
                ds.resize((stop, ds.shape[1]))
                ds[start:stop] = values[name].astype(self._block_dtype[name], copy=False)
            if "logits" in self._ds:
                ds = self._ds["logits"]
                ds.resize((stop, ds.shape[1]))
                ds[start:stop] = logit_values
            if time.monotonic() - self._last_flush >= _FLUSH_EVERY_S:
                self._file.flush()  # a failed write surfaces here, not in a destructor
                self._last_flush = time.monotonic()
        _digest_keys(self._keys_digest, keys)
        self.n_rows = stop

    def _widen_to_float32(self, name: str) -> None:
        """Re-create block ``name`` as float32, keeping the rows written so far."""
        assert self._file is not None
        group = self._file["blocks"]
        old = self._ds.pop(f"blocks/{name}")
        rows = old[()].astype(np.float32)
        dim = old.shape[1]
        chunks = old.chunks
        del old
        del group[name]
        ds = group.create_dataset(
            name,
            data=rows,
            maxshape=(None, dim),
            dtype=np.float32,
            chunks=chunks,
            fletcher32=True,
        )
        ds.attrs["overflow_fallback"] = True
        self._ds[f"blocks/{name}"] = ds
        self._block_dtype[name] = "float32"

    def finalize(self, attrs: Mapping[str, Any]) -> None:
        """Write the attributes, flush, verify the whole file, then mark it complete and close.

        Verification re-opens the file and reads every dataset back (fletcher32 checks each
        chunk), checking shapes, row counts and the keys digest; only then is ``complete=True``
        written. Any failure raises and leaves the file incomplete.
        """
        if self._file is None:
            raise CacheError(f"{self.path}: the writer is closed (an earlier write failed).")
        keys_sha256 = self._keys_digest.hexdigest()
        with self._guard():
            file_attrs = self._file.attrs
            for key, value in attrs.items():
                file_attrs[key] = json.dumps(value) if key in _JSON_ATTRS else value
            file_attrs["schema_version"] = SCHEMA_VERSION
            file_attrs["block_names"] = json.dumps(self.block_names)
            file_attrs["block_dtypes"] = json.dumps(self._block_dtype)
            file_attrs["dtype"] = self.storage_dtype
            file_attrs["n_rows"] = self.n_rows
            file_attrs["keys_sha256"] = keys_sha256
            file_attrs["complete"] = False
            for name, dtype in self._block_dtype.items():
                self._ds[f"blocks/{name}"].attrs["dtype"] = dtype
            self._file.flush()
            self._ds.clear()
            self._file.close()
        self._file = None
        status = inspect_cache(self.path, verify=True, require_complete=False)
        if status.problem is not None:
            raise CacheIntegrityError(
                f"{self.path}: verification after writing failed: {status.problem}"
            )
        with self._guard():
            self._file = h5py.File(self.path, "r+", locking=False)
            self._file.attrs["complete"] = True
            self._file.flush()
            self._file.close()
        self._file = None

    def close(self) -> None:
        """Close the file (an unfinished file stays incomplete; use on error paths)."""
        self._ds.clear()
        if self._file is not None and self._file.id.valid:
            try:
                self._file.close()
            except (OSError, RuntimeError):
                self._abort()
        self._file = None

    def __enter__(self) -> FeatureCacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decode_attrs(raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, bytes):
            value = value.decode()
        if key in _JSON_ATTRS and isinstance(value, str):
            value = json.loads(value)
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


@dataclass(frozen=True)
class CacheStatus:
    """What :func:`inspect_cache` found: the attributes of a valid cache, or why it is not one.

    Attributes:
        attrs: the decoded attributes (``None`` when the file is absent or not readable).
        problem: ``None`` for a valid, complete cache; else one sentence saying what is wrong.
    """

    attrs: dict[str, Any] | None
    problem: str | None

    @property
    def is_valid(self) -> bool:
        return self.problem is None


def _schema_problem(f: h5py.File, attrs: Mapping[str, Any]) -> str | None:
    """Return why an open HDF5 file is not a cache of this schema, or ``None``."""
    missing = [name for name in _REQUIRED_ATTRS if name not in attrs]
    if missing:
        return f"not a feature cache of ours (no {', '.join(repr(m) for m in missing)} attribute)"
    if attrs["schema_version"] != SCHEMA_VERSION:
        return (
            f"cache schema version {attrs['schema_version']!r}, this code reads version "
            f"{SCHEMA_VERSION}"
        )
    names = attrs["block_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return f"not a feature cache of ours (block_names is {names!r})"
    n_rows = attrs["n_rows"]
    expected = ["keys", "labels", *(f"blocks/{n}" for n in names)]
    for name in expected:
        if name not in f or not isinstance(f[name], h5py.Dataset):
            return f"not a feature cache of ours (no /{name} dataset)"
    for name in [*expected, *(["logits"] if "logits" in f else [])]:
        ds = f[name]
        if ds.shape[0] != n_rows:
            return f"/{name} has {ds.shape[0]} rows but n_rows is {n_rows}"
        if name != "keys" and ds.ndim != (1 if name == "labels" else 2):
            return (
                f"/{name} has shape {ds.shape}, expected {'(n,)' if name == 'labels' else '(n, d)'}"
            )
    return None


def _verify_problem(f: h5py.File, attrs: Mapping[str, Any]) -> str | None:
    """Read every dataset back (fletcher32 checks each chunk) and compare the keys digest."""
    names = ["keys", "labels", *(f"blocks/{n}" for n in attrs["block_names"])]
    names += ["logits"] if "logits" in f else []
    for name in names:
        try:
            data = f[name].asstr()[()] if name == "keys" else f[name][()]
        except (OSError, RuntimeError, ValueError) as exc:
            return f"/{name} fails its checksum or cannot be read ({str(exc).splitlines()[0]})"
        if name == "keys":
            digest = hashlib.sha256()
            _digest_keys(digest, list(data))
            if attrs.get("keys_sha256") != digest.hexdigest():
                return "/keys do not match their stored digest (keys_sha256)"
    return None


def inspect_cache(
    path: str | os.PathLike, *, verify: bool = False, require_complete: bool = True
) -> CacheStatus:
    """Check ``path`` against the cache schema; with ``verify``, also read every byte back.

    The planners' door: a missing, truncated, partial, foreign (another program's HDF5 file,
    another schema version) or — with ``verify`` — corrupt file comes back with a ``problem``,
    so it is rebuilt (extraction) or refused by name (analysis stages); it never reaches code
    that would index its attributes.
    """
    path = Path(path)
    if not path.is_file():
        return CacheStatus(None, "no such file")
    try:
        with h5py.File(path, "r", locking=False) as f:
            attrs = _decode_attrs(f.attrs)
            problem = _schema_problem(f, attrs)
            if problem is None and require_complete and attrs.get("complete") is not True:
                problem = "incomplete feature cache (no complete=True attribute)"
            if problem is None and verify:
                problem = _verify_problem(f, attrs)
    except (OSError, RuntimeError, ValueError, TypeError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return CacheStatus(None, f"not a readable HDF5 file ({first})")
    return CacheStatus(attrs, problem)


def require_cache_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """Return the attributes of a valid, complete cache; raise naming what is wrong otherwise.

    The analysis stages' planners' door (attributes only, no features read).

    Raises:
        MissingInputError: no such file.
        CacheIntegrityError: partial, incomplete, unreadable or not a cache of this schema.
    """
    status = inspect_cache(path)
    if status.problem == "no such file":
        raise MissingInputError(
            f"{path}: feature cache not found; run scripts/feature_extraction.py first."
        )
    if status.problem is not None or status.attrs is None:
        raise CacheIntegrityError(
            f"{path}: {status.problem}; rerun scripts/feature_extraction.py (it rebuilds such "
            "files)."
        )
    return status.attrs


def read_cache_attrs(path: str | os.PathLike) -> dict[str, Any] | None:
    """Return a complete, valid cache's attributes, or ``None`` if the file is absent, unreadable,
    incomplete or not a cache of this schema (see :func:`inspect_cache` for the reason)."""
    status = inspect_cache(path)
    return status.attrs if status.is_valid else None


class FeatureCache:
    """Lazy, read-only view of one complete feature cache file (use :func:`open_cache`)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.name.endswith(PARTIAL_SUFFIX):
            raise CacheError(
                f"{self.path}: this is a partial file of an extraction that has not finished; "
                "rerun feature_extraction."
            )
        if not self.path.is_file():
            raise MissingInputError(
                f"{self.path}: feature cache not found; run scripts/feature_extraction.py first."
            )
        try:
            self._inode = os.stat(self.path).st_ino
            self._file = h5py.File(self.path, "r", locking=False)
        except OSError as exc:
            raise CacheError(
                f"{self.path}: not a readable HDF5 file ({exc}); delete it and "
                "rerun feature_extraction."
            ) from exc
        self.attrs = _decode_attrs(self._file.attrs)
        if self.attrs.get("complete") is not True:
            self._file.close()
            raise CacheError(
                f"{self.path}: incomplete feature cache (no complete=True attribute); delete it "
                "and rerun feature_extraction."
            )
        problem = _schema_problem(self._file, self.attrs)
        if problem is not None:
            self._file.close()
            raise CacheIntegrityError(
                f"{self.path}: {problem}; rerun feature_extraction (it rebuilds such files)."
            )
        self.block_names: list[str] = list(self.attrs["block_names"])
        self.content_key: str = self.attrs.get("content_key", "")
        self.model_id: str = self.attrs.get("model_id", "")
        self.n_rows: int = int(self.attrs["n_rows"])

    def _read(self, name: str) -> np.ndarray:
        """Read dataset ``name`` whole; a checksum failure quarantines the file and raises a
        named :class:`CacheIntegrityError`."""
        try:
            return self._file[name].asstr()[()] if name == "keys" else self._file[name][()]
        except (OSError, RuntimeError) as exc:
            raise self._corrupt(
                f"/{name} fails its checksum or cannot be read ({str(exc).splitlines()[0]})"
            ) from exc

    def _corrupt(self, problem: str) -> CacheIntegrityError:
        """Set the corrupt file aside (:func:`quarantine_cache`) and return the error saying so."""
        moved = quarantine_cache(self.path, inode=self._inode)
        return CacheIntegrityError(f"{self.path}: {problem}; the file is corrupt: {moved}")

    @cached_property
    def keys(self) -> np.ndarray:
        """Row keys, (n,) array of str (checked against the stored ``keys_sha256``)."""
        keys = self._read("keys")
        digest = hashlib.sha256()
        _digest_keys(digest, list(keys))
        if digest.hexdigest() != self.attrs.get("keys_sha256"):
            raise self._corrupt("/keys do not match their stored digest (keys_sha256)")
        return keys

    @cached_property
    def labels(self) -> npt.NDArray[np.int64]:
        """Row labels, (n,) int64."""
        return self._read("labels")

    @property
    def has_logits(self) -> bool:
        return "logits" in self._file

    @property
    def logits(self) -> npt.NDArray[np.float32]:
        """Classifier logits, (n, C) float32."""
        if not self.has_logits:
            raise CacheError(
                f"{self.path}: model '{self.model_id}' has no classification head "
                "(no /logits in the cache)."
            )
        return self._read("logits")

    def block(self, name: str, dtype: npt.DTypeLike | None = np.float32) -> np.ndarray:
        """Return block ``name`` as an (n, d) array, read in one contiguous call.

        Args:
            name: one of :attr:`block_names`.
            dtype: cast to this dtype (default float32); ``None`` keeps the stored dtype.
        """
        if name not in self.block_names:
            raise CacheError(
                f"{self.path}: no block {name!r}. Blocks: {', '.join(self.block_names)}."
            )
        data = self._read(f"blocks/{name}")
        return data if dtype is None else data.astype(dtype, copy=False)

    def block_attrs(self, name: str) -> dict[str, Any]:
        return _decode_attrs(self._file["blocks"][name].attrs)

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"FeatureCache({str(self.path)!r}, model_id={self.model_id!r}, "
            f"n_rows={self.n_rows}, n_blocks={len(self.block_names)})"
        )


#: Suffix under which a reader sets aside a cache that failed its checksums.
CORRUPT_SUFFIX = ".corrupt"


def quarantine_cache(path: str | os.PathLike, *, inode: int | None = None) -> str:
    """Rename a corrupt cache to ``<path>.corrupt`` (atomically) so the next extraction
    rebuilds it; return the sentence that tells the user what happened.

    Checksums are verified as data is read (fletcher32 per chunk, ``keys_sha256``), not by the
    planners, so the reader that finds the damage is the one that takes the file out of
    service. With ``inode``, the file is moved only if ``path`` still names that file (a
    rebuild may have replaced it meanwhile). If it cannot be moved (read-only file system),
    the sentence says to delete it.
    """
    path = Path(path)
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    try:
        if inode is not None and os.stat(path).st_ino != inode:
            return "it has since been replaced; rerun this stage"
        os.replace(path, target)
    except FileNotFoundError:
        return "it has since been moved away; rerun feature_extraction (it rebuilds it)"
    except OSError as exc:
        return (
            f"it could not be moved aside ({exc.strerror}); delete it and rerun feature_extraction"
        )
    return (
        f"moved to {target.name} (kept for inspection; delete it when done); rerun "
        "feature_extraction (it rebuilds the file)"
    )


def open_cache(path: str | os.PathLike) -> FeatureCache:
    """Open a complete feature cache lazily (file locking off; refuses partial files).

    Raises:
        MissingInputError: no such file.
        CacheError: a ``.partial`` or incomplete file, or not HDF5.
    """
    return FeatureCache(path)


def check_same_keys(
    ref_path: str | os.PathLike, ref_keys: np.ndarray, path: str | os.PathLike, keys: np.ndarray
) -> None:
    """Raise :class:`CacheError` naming both files (and the first differing row) when two
    caches' ``/keys`` differ: their rows are not the same samples in the same order."""
    if len(keys) == len(ref_keys) and np.array_equal(keys, ref_keys):
        return
    if len(keys) != len(ref_keys):
        detail = f"{len(ref_keys)} rows vs {len(keys)} rows"
    else:
        i = int(np.flatnonzero(keys != ref_keys)[0])
        detail = f"row {i}: {ref_keys[i]!r} vs {keys[i]!r}"
    raise CacheError(
        f"{ref_path} and {path}: /keys differ ({detail}); the caches were built on different "
        "subsets or datasets. Rebuild them with the same --max_samples."
    )


def load_aligned_blocks(
    paths: Sequence[str | os.PathLike], block: str | None = None
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Load the same block of several models' caches for one dataset, checking row alignment.

    Args:
        paths: cache files of the models to compare (same dataset and split).
        block: block name; ``None`` takes each model's last block.

    Returns:
        ``(keys, labels, [features_model_0, features_model_1, …])``.

    Raises:
        CacheError: the files' ``/keys`` differ (the message names both files and the first
            differing row).
    """
    if not paths:
        raise ValueError("load_aligned_blocks needs at least one cache path")
    features: list[np.ndarray] = []
    ref_keys = ref_labels = None
    ref_path = None
    for path in paths:
        with open_cache(path) as cache:
            keys = cache.keys
            if ref_keys is None or ref_path is None:
                ref_keys, ref_labels, ref_path = keys, cache.labels, cache.path
            else:
                check_same_keys(ref_path, ref_keys, cache.path, keys)
            features.append(cache.block(block if block is not None else cache.block_names[-1]))
    assert ref_keys is not None and ref_labels is not None
    return ref_keys, ref_labels, features
