"""The dataset interface every loader shares: labelled images identified by keys.

A dataset is *map-style*: ``len(ds)`` rows in a fixed, deterministic order, ``ds[i]`` returns a
:class:`Sample` whose ``index`` is the row position ``i``. Rows are identified by their key (the
webdataset ``__key__``, or the path relative to the split folder for an image folder), which is
what the feature cache stores so that two caches can be checked to hold the same rows.

:meth:`ImageDataset.subset` returns a *view*: the same underlying index with a selection of rows,
order preserved. Images are read and decoded lazily in ``__getitem__``, so a dataset is cheap to
build, pickle and hand to ``torch.utils.data.DataLoader`` workers.
"""

from __future__ import annotations

import abc
import copy
import hashlib
import io
import operator
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image

from sim_consistency.errors import DataError

__all__ = ["Sample", "ImageDataset", "collate_samples", "decode_image"]

Transform = Callable[[Image.Image], Any]
DatasetT = TypeVar("DatasetT", bound="ImageDataset")


class Sample(NamedTuple):
    """One row of a dataset (or, after :func:`collate_samples`, one batch of rows).

    Attributes:
        index: row position in the dataset it came from (a view counts its own rows).
        key: the row's identity (``__key__`` or relative path).
        image: the RGB ``PIL.Image`` or whatever the dataset's transform returned.
        label: class index into the dataset's ``classnames``.
    """

    index: Any
    key: Any
    image: Any
    label: Any


def collate_samples(batch: Sequence[Sample]) -> Sample:
    """Return a batch :class:`Sample` from a list of samples (``DataLoader(collate_fn=...)``).

    ``index`` and ``label`` become int64 tensors of shape ``(b,)``, ``image`` the stacked image
    tensors ``(b, ...)`` and ``key`` a ``list[str]``.

    Args:
        batch: samples whose images are tensors of one shape (give the dataset a transform
            such as the model's eval transform).

    Raises:
        TypeError: an image is not a tensor (the dataset has no tensor-producing transform).
    """
    import torch  # local: the data package must stay importable without paying for torch

    if len(batch) == 0:
        raise ValueError("collate_samples: empty batch (got 0 samples).")
    images = [sample.image for sample in batch]
    for sample in batch:
        if not isinstance(sample.image, torch.Tensor):
            raise TypeError(
                f"collate_samples: sample '{sample.key}' has an image of type "
                f"{type(sample.image).__name__}, not a tensor. Give the dataset a transform that "
                "returns tensors (the model's eval transform, or torchvision's ToTensor)."
            )
    return Sample(
        index=torch.tensor([int(sample.index) for sample in batch], dtype=torch.int64),
        key=[str(sample.key) for sample in batch],
        image=torch.stack(images),
        label=torch.tensor([int(sample.label) for sample in batch], dtype=torch.int64),
    )


def decode_image(data: bytes, *, key: str, where: str | Path) -> Image.Image:
    """Return ``data`` decoded as an RGB ``PIL.Image``.

    Args:
        data: the encoded image (PNG, JPEG, WebP, …; the format is read from the bytes).
        key: the row's key, for the error message.
        where: the file that holds the bytes (shard or image file), for the error message.

    Raises:
        DataError: the bytes are not a decodable image; the message names key and file.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, … for bad bytes
        raise DataError(
            f"{where}: cannot decode the image of sample '{key}' ({type(exc).__name__}: {exc}; "
            f"{len(data)} bytes). The file is corrupt: re-download or rebuild the dataset."
        ) from exc


def _as_rows(indices: Any, n_rows: int, *, where: str) -> npt.NDArray[np.int64]:
    """Validate ``indices`` as unique row positions in ``range(n_rows)``; return them as int64."""
    rows = np.asarray(indices)
    if rows.ndim != 1:
        raise ValueError(f"{where}: indices must be 1-D (got shape {rows.shape}).")
    if rows.size == 0:
        return np.zeros(0, dtype=np.int64)
    if rows.dtype == bool or not np.issubdtype(rows.dtype, np.integer):
        raise TypeError(
            f"{where}: indices must be integers (got dtype {rows.dtype}). Pass row positions, "
            "e.g. from stratified_subset."
        )
    rows = rows.astype(np.int64)
    bad = rows[(rows < 0) | (rows >= n_rows)]
    if bad.size:
        raise IndexError(
            f"{where}: index {int(bad[0])} is out of range for {n_rows} rows "
            f"({bad.size} out of range in all)."
        )
    if np.unique(rows).size != rows.size:
        raise ValueError(
            f"{where}: indices contain duplicates (got {rows.size} indices, "
            f"{np.unique(rows).size} distinct); rows are identified by key and must be unique."
        )
    return rows


class ImageDataset(abc.ABC):
    """Map-style dataset of labelled images with unique keys, in a deterministic order.

    Subclasses build the full index (``keys``, ``labels`` and whatever they need to find an
    image) once and implement :meth:`_load_image`. A view made by :meth:`subset` shares that
    index and only holds the selected row numbers (:attr:`source_indices`).

    Attributes:
        name: the dataset name (``wds/digits``, ``imagefolder:/data/pets``).
        split: the split (``train``, ``test``, …).
        classnames: class names, label ``i`` is ``classnames[i]``.
        transform: applied to each decoded RGB ``PIL.Image`` (``None``: return the image).
    """

    def __init__(
        self,
        *,
        name: str,
        split: str,
        classnames: Sequence[str],
        keys: Sequence[str],
        labels: npt.ArrayLike,
        transform: Transform | None = None,
    ) -> None:
        self.name = name
        self.split = split
        self.classnames = list(classnames)
        self.transform = transform
        self._all_keys = list(keys)
        self._all_labels = np.asarray(labels, dtype=np.int64)
        self._all_labels.setflags(write=False)
        assert len(self._all_keys) == len(self._all_labels)
        self._rows = np.arange(len(self._all_keys), dtype=np.int64)
        self._keys: list[str] | None = None

    # -- what subclasses provide ----------------------------------------------------------------
    @abc.abstractmethod
    def _load_image(self, row: int) -> Image.Image:
        """Return the RGB image of full-index row ``row``."""

    @abc.abstractmethod
    def _read_bytes(self, row: int) -> bytes:
        """Return the encoded image bytes of full-index row ``row``, as stored."""

    @abc.abstractmethod
    def _location(self) -> str:
        """Return where the data lives, for :meth:`describe`."""

    def _fresh_copy(self: DatasetT) -> DatasetT:
        """Return a shallow copy that shares the index but no open files."""
        view = copy.copy(self)
        view._keys = None
        return view

    # -- the interface ---------------------------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        """Row keys, in row order (unique)."""
        if self._keys is None:
            self._keys = [self._all_keys[row] for row in self._rows]
        return self._keys

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        """Row labels, ``(n,)`` int64, in row order."""
        return self._all_labels[self._rows]

    @property
    def source_indices(self) -> npt.NDArray[np.int64]:
        """Row positions in the full split, ``(n,)`` int64 (``arange(n)`` unless a subset)."""
        return self._rows.copy()

    @property
    def n_classes(self) -> int:
        """Number of classes (``len(classnames)``)."""
        return len(self.classnames)

    @property
    def n_source_rows(self) -> int:
        """Number of rows of the full split this dataset (or view) is taken from."""
        return len(self._all_keys)

    def __len__(self) -> int:
        return int(self._rows.size)

    def __getitem__(self, index: int) -> Sample:
        """Return row ``index`` as a :class:`Sample` (image decoded, transform applied)."""
        i = operator.index(index)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.name} [{self.split}]: index {index} out of range for {n} rows")
        row = int(self._rows[i])
        image: Any = self._load_image(row)
        if self.transform is not None:
            image = self.transform(image)
        return Sample(
            index=i, key=self._all_keys[row], image=image, label=int(self._all_labels[row])
        )

    def content_digest(self, *, threads: int | None = None) -> str:
        """Return the sha256 hex digest of this view's rows: each key, label and image bytes.

        What a feature cache's content key takes from the data, so that re-built shards with
        the same keys but other pixels or labels make every downstream output stale. The
        encoded bytes are hashed as stored (no decoding); rows are read and hashed on
        ``threads`` threads (default: up to 8; hashlib releases the GIL), then combined in row
        order.
        """
        rows = [int(row) for row in self._rows]
        workers = threads or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            digests = pool.map(lambda row: hashlib.sha256(self._read_bytes(row)).digest(), rows)
            combined = hashlib.sha256()
            for row, image_digest in zip(rows, digests, strict=True):
                key = self._all_keys[row].encode("utf-8")
                combined.update(b"%d %d\n" % (len(key), int(self._all_labels[row])))
                combined.update(key)
                combined.update(image_digest)
        return combined.hexdigest()

    def subset(self: DatasetT, indices: npt.ArrayLike) -> DatasetT:
        """Return a view with the rows at positions ``indices`` (order preserved).

        Args:
            indices: unique row positions in ``range(len(self))``, e.g. from
                :func:`~sim_consistency.data.subsets.stratified_subset`.

        Raises:
            IndexError: an index is out of range. ValueError / TypeError: not 1-D, duplicated or
                not integers.
        """
        rows = _as_rows(indices, len(self), where=f"{self.name} [{self.split}].subset")
        view = self._fresh_copy()
        view._rows = self._rows[rows]
        return view

    def relabel(
        self: DatasetT, label_map: npt.ArrayLike, classnames: Sequence[str], *, name: str
    ) -> DatasetT:
        """Return a view of the same rows under new labels and a new name.

        Args:
            label_map: ``label_map[old_label]`` is the new label; every row of the view must map
                into ``range(len(classnames))`` (select rows with :meth:`subset` first).
            classnames: the new classes.
            name: the view's dataset name (e.g. Rep2Rep's ``cifar100-coarse``).

        Raises:
            DataError: a row's label has no new label.
        """
        table = np.asarray(label_map, dtype=np.int64)
        old = self.labels
        new = np.full(old.shape, -1, dtype=np.int64)
        known = old < table.size
        new[known] = table[old[known]]
        bad = (new < 0) | (new >= len(classnames))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{name} [{self.split}]: row '{self.keys[row]}' has label {int(old[row])} of "
                f"{self.name}, which maps to no class of {name} ({len(classnames)} classes)."
            )
        full = np.full(len(self._all_labels), -1, dtype=np.int64)
        full[self._rows] = new
        view = self._fresh_copy()
        view._all_labels = full
        view._all_labels.setflags(write=False)
        view.classnames = list(classnames)
        view.name = name
        return view

    def describe(self) -> str:
        """Return a one-line human summary: name, split, rows, classes and location."""
        subset = "" if len(self) == self.n_source_rows else f" (subset of {self.n_source_rows})"
        return (
            f"{self.name} [{self.split}]: {len(self)} samples{subset}, {self.n_classes} classes, "
            f"{self._location()}"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"
