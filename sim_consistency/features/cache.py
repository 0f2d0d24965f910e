"""The HDF5 feature cache: one immutable file per model x dataset x split.

Layout (DESIGN.md, "Feature cache")::

    /keys            (n,)   str      webdataset __key__ (or relative path)
    /labels          (n,)   int64
    /blocks/<name>   (n, d) float16 | float32   pooled block output, blocks in forward order
    /logits          (n, C) float32  when the model has a classification head
    attrs: schema_version, model_id, content_key, recipe, weights_sha256, preprocessing,
           pooling, block_names, dtype, code_version, library_versions, n_rows, complete

:class:`FeatureCacheWriter` appends batches to resizable datasets (memory does not grow with
the number of images) and is always used on a ``.partial`` file that the caller renames when
complete (see :func:`sim_consistency.io.atomic_output`). :func:`open_cache` is the lazy reader;
it refuses partial or incomplete files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from sim_consistency.errors import CacheError, MissingInputError
from sim_consistency.io import PARTIAL_SUFFIX

__all__ = [
    "SCHEMA_VERSION",
    "FLOAT16_MAX",
    "FeatureCacheWriter",
    "FeatureCache",
    "open_cache",
    "read_cache_attrs",
    "load_aligned_blocks",
    "check_same_keys",
]

SCHEMA_VERSION = 1
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
        self.storage_dtype = storage_dtype
        self.block_names = list(block_dims)
        self._file = h5py.File(self.path, "w", locking=False)
        chunk = max(1, min(_CHUNK_ROWS, expected_rows or _CHUNK_ROWS))
        self._file.create_dataset(
            "keys", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(chunk,)
        )
        self._file.create_dataset(
            "labels", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(chunk,)
        )
        group = self._file.create_group("blocks")
        self._block_dtype: dict[str, str] = {}
        for name, dim in block_dims.items():
            dtype = "float32" if name in float32_blocks else storage_dtype
            group.create_dataset(
                name,
                shape=(0, dim),
                maxshape=(None, dim),
                dtype=dtype,
                chunks=(chunk, dim),
            )
            group[name].attrs["overflow_fallback"] = False
            self._block_dtype[name] = dtype
        if n_classes is not None:
            self._file.create_dataset(
                "logits",
                shape=(0, n_classes),
                maxshape=(None, n_classes),
                dtype=np.float32,
                chunks=(chunk, n_classes),
            )
        self.n_rows = 0

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
        start, stop = self.n_rows, self.n_rows + b
        for name in ("keys", "labels"):
            self._file[name].resize((stop,))
        self._file["keys"][start:stop] = list(keys)
        self._file["labels"][start:stop] = labels
        for name in self.block_names:
            values = np.asarray(blocks[name], dtype=np.float32)
            if values.shape[0] != b:
                raise ValueError(f"block {name}: {values.shape[0]} rows for {b} keys")
            if not np.isfinite(values).all():
                raise CacheError(
                    f"{self.path}: block '{name}' has NaN/inf values in rows {start}..{stop - 1}; "
                    "the model's outputs are not finite (check its weights and inputs)."
                )
            if (
                self._block_dtype[name] == "float16"
                and values.size
                and (float(np.abs(values).max()) >= FLOAT16_MAX)
            ):
                self._widen_to_float32(name)
            ds = self._file["blocks"][name]
            ds.resize((stop, ds.shape[1]))
            ds[start:stop] = values.astype(self._block_dtype[name], copy=False)
        if "logits" in self._file:
            if logits is None:
                raise ValueError("this cache stores logits, but the batch has none")
            ds = self._file["logits"]
            ds.resize((stop, ds.shape[1]))
            ds[start:stop] = np.asarray(logits, dtype=np.float32)
        self.n_rows = stop

    def _widen_to_float32(self, name: str) -> None:
        """Re-create block ``name`` as float32, keeping the rows written so far."""
        group = self._file["blocks"]
        old = group[name]
        rows = old[()].astype(np.float32)
        dim = old.shape[1]
        chunks = old.chunks
        del group[name]
        ds = group.create_dataset(
            name, data=rows, maxshape=(None, dim), dtype=np.float32, chunks=chunks
        )
        ds.attrs["overflow_fallback"] = True
        self._block_dtype[name] = "float32"

    def finalize(self, attrs: Mapping[str, Any]) -> None:
        """Write the file attributes (JSON-encoding structured ones), mark complete, close."""
        file_attrs = self._file.attrs
        for key, value in attrs.items():
            file_attrs[key] = json.dumps(value) if key in _JSON_ATTRS else value
        file_attrs["schema_version"] = SCHEMA_VERSION
        file_attrs["block_names"] = json.dumps(self.block_names)
        file_attrs["block_dtypes"] = json.dumps(self._block_dtype)
        file_attrs["dtype"] = self.storage_dtype
        file_attrs["n_rows"] = self.n_rows
        for name, dtype in self._block_dtype.items():
            self._file["blocks"][name].attrs["dtype"] = dtype
        file_attrs["complete"] = True
        self.close()

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

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


def read_cache_attrs(path: str | os.PathLike) -> dict[str, Any] | None:
    """Return a complete cache's attributes, or ``None`` if the file is absent or unreadable.

    Used by planners to decide whether a file is up to date; a truncated or half-written file
    reads as ``None`` (it is rebuilt, never reused).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r", locking=False) as f:
            attrs = _decode_attrs(f.attrs)
    except (OSError, ValueError):
        return None
    return attrs if attrs.get("complete") is True else None


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
        self.block_names: list[str] = list(self.attrs["block_names"])
        self.content_key: str = self.attrs.get("content_key", "")
        self.model_id: str = self.attrs.get("model_id", "")
        self.n_rows: int = int(self.attrs["n_rows"])

    @cached_property
    def keys(self) -> np.ndarray:
        """Row keys, (n,) array of str."""
        return self._file["keys"].asstr()[()]

    @cached_property
    def labels(self) -> npt.NDArray[np.int64]:
        """Row labels, (n,) int64."""
        return self._file["labels"][()]

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
        return self._file["logits"][()]

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
        data = self._file["blocks"][name][()]
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
