"""Map-style loader for CLIP_benchmark's webdataset layout (``wds/<name>`` datasets).

Layout (DESIGN.md, "Datasets")::

    <dir>/classnames.txt            one class name per line, label i = line i
    <dir>/<split>/nshards.txt       N
    <dir>/<split>/{0..N-1}.tar      uncompressed tar shards

Inside a shard, members are grouped into samples by ``__key__`` with the webdataset convention
(key = member path up to the first dot of its base name, extension = the rest, lower-cased):
``s0000123.png`` + ``s0000123.cls`` is one sample. The image sits under ``webp``, ``png``,
``jpg`` or ``jpeg``, the label under ``cls`` (an ASCII integer).

Unlike ``webdataset.WebDataset`` (a stream), :class:`WdsDataset` is *map-style*: one index pass
reads every shard's tar headers in shard order (plus the tiny ``.cls`` payloads) and records, per
sample, its key, label, shard and the byte range of its image. ``ds[i]`` then reads exactly
those bytes with ``os.pread`` and decodes them. Row order is shard index order, then tar order,
so every model sees the same rows in the same order; random access makes subsets cheap.

The index pass validates the shards: a missing or extra shard, a file that is not a tar, a
truncated tar (checked against the file size and the end-of-archive marker, since ``tarfile``
stops silently on some truncations), a sample without image or label, a duplicated key and a
label outside ``range(len(classnames))`` raise errors that name the shard and key at fault.
"""

from __future__ import annotations

import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sim_consistency.data.dataset import ImageDataset, Sample, Transform, decode_image
from sim_consistency.errors import DataError, MissingInputError

__all__ = [
    "WdsDataset",
    "IMAGE_EXTENSIONS",
    "LABEL_EXTENSION",
    "read_classnames",
    "read_nshards",
    "split_key",
    "DOWNLOAD_HINT",
    "EncodedImages",
    "collate_encoded",
]

IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")
"""Member extensions holding a sample's image, in order of preference."""

LABEL_EXTENSION = "cls"
"""Member extension holding a sample's label (an ASCII integer)."""

DOWNLOAD_HINT = "scripts/download_ds/download_webdatasets.py"

_KEY_PATTERN = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext
_BLOCK = tarfile.BLOCKSIZE


def split_key(member_name: str) -> tuple[str, str] | None:
    """Return ``(key, extension)`` of a tar member name, or ``None`` if it has no extension.

    Webdataset's convention: the key is the path up to the first dot of the base name, the
    extension is the rest, lower-cased (``a/b.seg.png`` -> ``("a/b", "seg.png")``).
    """
    match = _KEY_PATTERN.match(member_name)
    if match is None:
        return None
    return match.group(1), match.group(2).lower()


def read_classnames(path: Path) -> list[str]:
    """Return the class names of ``classnames.txt`` (one per line, blank lines at the end dropped).

    Raises:
        MissingInputError: the file does not exist.
        DataError: the file lists no class.
    """
    if not path.is_file():
        raise MissingInputError(
            f"{path}: classnames file not found. Every wds dataset folder needs a classnames.txt "
            f"with one class name per line; re-download the dataset with {DOWNLOAD_HINT}."
        )
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DataError(f"{path}: no class names in file (got an empty file). List one per line.")
    return lines


def read_nshards(split_dir: Path) -> int:
    """Return the shard count ``N`` written in ``<split_dir>/nshards.txt``.

    Raises:
        MissingInputError: the file does not exist.
        DataError: it does not hold one non-negative integer.
    """
    path = split_dir / "nshards.txt"
    if not path.is_file():
        raise MissingInputError(
            f"{path}: nshards.txt not found. A wds split folder holds {{0..N-1}}.tar and "
            f"nshards.txt with N; re-download the dataset with {DOWNLOAD_HINT}."
        )
    text = path.read_text(encoding="utf-8").strip()
    try:
        n_shards = int(text)
    except ValueError:
        n_shards = -1
    if n_shards < 0:
        raise DataError(
            f"{path}: expected one non-negative integer, the number of shards (got {text!r}). "
            "Write the number of .tar files of the split into it."
        )
    return n_shards


@dataclass
class _ShardEntries:
    """The samples of one shard, in tar order (one list entry per sample)."""

    keys: list[str]
    labels: list[int]
    offsets: list[int]
    sizes: list[int]
    extensions: list[str]


def _read_at(fd: int, offset: int, size: int) -> bytes:
    """Return ``size`` bytes at ``offset`` of an open file (positional: safe to share)."""
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - platforms without pread
    return os.read(fd, size)


def _check_end_of_archive(shard: Path, fd: int, end: int, file_size: int, last: str) -> None:
    """Raise DataError unless a zero block (end-of-archive marker) starts at ``end``.

    ``tarfile`` stops iterating silently at a truncated or garbled header, so reaching the end
    of the member list proves nothing; a complete archive ends with zero blocks.
    """
    block = _read_at(fd, end, _BLOCK)
    if len(block) == _BLOCK and not any(block):
        return
    what = (
        f"the file ends at byte {file_size}, inside or right after member '{last}'"
        if end + _BLOCK > file_size
        else f"a corrupt tar header at byte {end}, after member '{last}'"
    )
    raise DataError(
        f"{shard}: shard is truncated or corrupt ({what}; no end-of-archive marker). "
        f"Re-download the dataset with {DOWNLOAD_HINT}, or rebuild it."
    )


def _parse_label(payload: bytes, *, key: str, shard: Path) -> int:
    try:
        return int(payload.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise DataError(
            f"{shard}: sample '{key}' has a label that is not an ASCII integer "
            f"(got {payload[:40]!r}). The .cls member must hold the class index as text."
        ) from None


def _index_shard(shard: Path) -> _ShardEntries:
    """Read the headers (and ``.cls`` payloads) of one shard and return its samples."""
    file_size = shard.stat().st_size
    entries = _ShardEntries([], [], [], [], [])
    fd = os.open(shard, os.O_RDONLY)
    try:
        try:
            with open(shard, "rb") as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
                groups: list[tuple[str, dict[str, tarfile.TarInfo]]] = []
                last = "(none)"
                for member in tar:
                    last = member.name
                    end = member.offset_data + member.size
                    if end > file_size:
                        raise DataError(
                            f"{shard}: shard is truncated: member '{member.name}' needs bytes up "
                            f"to {end} but the file has {file_size}. Re-download the dataset "
                            f"with {DOWNLOAD_HINT}, or rebuild it."
                        )
                    if not member.isfile():
                        continue
                    parts = split_key(member.name)
                    if parts is None:
                        continue
                    key, extension = parts
                    if not groups or groups[-1][0] != key:
                        groups.append((key, {}))
                    members = groups[-1][1]
                    if extension in members:
                        raise DataError(
                            f"{shard}: sample '{key}' has two '{extension}' members "
                            f"('{member.name}' appears twice in a row). Rebuild the shard."
                        )
                    members[extension] = member
                tar_end = tar.offset
        except tarfile.TarError as exc:
            raise DataError(
                f"{shard}: not a readable uncompressed tar archive ({type(exc).__name__}: {exc}). "
                f"Re-download the dataset with {DOWNLOAD_HINT}, or rebuild it."
            ) from exc
        _check_end_of_archive(shard, fd, tar_end, file_size, last)

        for key, members in groups:
            image_extension = next((ext for ext in IMAGE_EXTENSIONS if ext in members), None)
            found = ", ".join(sorted(members))
            if image_extension is None:
                raise DataError(
                    f"{shard}: sample '{key}' has no image (got members: {found}). Each sample "
                    f"needs one of {', '.join(IMAGE_EXTENSIONS)}."
                )
            if LABEL_EXTENSION not in members:
                raise DataError(
                    f"{shard}: sample '{key}' has no label (got members: {found}). Each sample "
                    f"needs a '{LABEL_EXTENSION}' member with the class index."
                )
            label_member = members[LABEL_EXTENSION]
            payload = _read_at(fd, label_member.offset_data, label_member.size)
            image_member = members[image_extension]
            entries.keys.append(key)
            entries.labels.append(_parse_label(payload, key=key, shard=shard))
            entries.offsets.append(image_member.offset_data)
            entries.sizes.append(image_member.size)
            entries.extensions.append(image_extension)
    finally:
        os.close(fd)
    return entries


def _project_root_of(dataset_dir: Path) -> str:
    """Return the project root a ``<root>/datasets/wds/wds_<name>`` folder belongs to."""
    if dataset_dir.parent.name == "wds" and dataset_dir.parent.parent.name == "datasets":
        return str(dataset_dir.parent.parent.parent)
    return "<root>"


class WdsDataset(ImageDataset):
    """One split of a CLIP_benchmark webdataset folder, as a map-style dataset.

    Args:
        root: the dataset folder (``<project_root>/datasets/wds/wds_<name>``).
        split: the split sub-folder (``train``, ``test``, …).
        name: dataset name for messages and :meth:`describe` (default: the folder name).
        transform: applied to each decoded RGB ``PIL.Image``.

    Raises:
        MissingInputError: the folder, split, ``nshards.txt``, a shard or ``classnames.txt`` is
            missing.
        DataError: the shard count differs from ``nshards.txt``; a shard is not a tar or is
            truncated; a sample lacks its image or label; a key repeats; a label is out of range.

    Example:
        >>> ds = WdsDataset(location.wds_dataset_dir("digits"), "test", name="wds/digits")
        >>> sample = ds[0]    # Sample(index=0, key='s0000005', image=<PIL.Image>, label=5)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        *,
        name: str | None = None,
        transform: Transform | None = None,
    ) -> None:
        self.root = Path(root)
        name = name or self.root.name
        if not self.root.is_dir():
            raise MissingInputError(
                f"{self.root}: dataset folder of {name} not found. Download it with "
                f"`python {DOWNLOAD_HINT} --datasets {name} --splits {split} --project_root "
                f"{_project_root_of(self.root)}`, or copy CLIP_benchmark's {self.root.name} "
                "folder there."
            )
        self.split_dir = self.root / split
        if not self.split_dir.is_dir():
            available = sorted(p.name for p in self.root.iterdir() if (p / "nshards.txt").is_file())
            raise MissingInputError(
                f"{self.split_dir}: split '{split}' of {name} not found (available splits: "
                f"{', '.join(available) or 'none'}). Download it with `python {DOWNLOAD_HINT} "
                f"--datasets {name} --splits {split}`, or pick an available split."
            )
        n_shards = read_nshards(self.split_dir)
        self.shards = [self.split_dir / f"{i}.tar" for i in range(n_shards)]
        for shard in self.shards:
            if not shard.is_file():
                raise MissingInputError(
                    f"{shard}: shard not found ({self.split_dir / 'nshards.txt'} says "
                    f"{n_shards} shards, 0.tar to {n_shards - 1}.tar). Re-download the dataset "
                    f"with {DOWNLOAD_HINT}."
                )
        n_tars = len(list(self.split_dir.glob("*.tar")))
        if n_tars != n_shards:
            raise DataError(
                f"{self.split_dir}: nshards.txt says {n_shards} shards but the folder holds "
                f"{n_tars} .tar files (got {n_tars}). Remove stray .tar files or fix nshards.txt."
            )
        self.classnames_file = self.root / "classnames.txt"
        classnames = read_classnames(self.classnames_file)

        keys: list[str] = []
        labels: list[int] = []
        shard_ids: list[int] = []
        offsets: list[int] = []
        sizes: list[int] = []
        extensions: list[str] = []
        first_shard: dict[str, int] = {}
        for shard_id, shard in enumerate(self.shards):
            entries = _index_shard(shard)
            for key, label in zip(entries.keys, entries.labels, strict=True):
                if key in first_shard:
                    raise DataError(
                        f"{shard}: key '{key}' repeats (already in {self.shards[first_shard[key]]}). "
                        "Rows are identified by key; every __key__ of a split must be unique."
                    )
                first_shard[key] = shard_id
                if not 0 <= label < len(classnames):
                    raise DataError(
                        f"{shard}: sample '{key}' has label {label}, outside range(0, "
                        f"{len(classnames)}) of the {len(classnames)} classes in "
                        f"{self.classnames_file} (got {label}). Fix the shard or classnames.txt."
                    )
            keys += entries.keys
            labels += entries.labels
            shard_ids += [shard_id] * len(entries.keys)
            offsets += entries.offsets
            sizes += entries.sizes
            extensions += entries.extensions
        if not keys:
            raise DataError(
                f"{self.split_dir}: split '{split}' of {name} holds no samples (got {n_shards} "
                "shards with 0 samples). Re-download the dataset."
            )
        super().__init__(
            name=name,
            split=split,
            classnames=classnames,
            keys=keys,
            labels=np.asarray(labels, dtype=np.int64),
            transform=transform,
        )
        self._shard_ids = np.asarray(shard_ids, dtype=np.int32)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._sizes = np.asarray(sizes, dtype=np.int64)
        self._extensions = extensions
        self._fds: dict[int, int] = {}
        self._fds_pid = os.getpid()

    # -- image access ----------------------------------------------------------------------------
    @property
    def image_extensions(self) -> list[str]:
        """Image member extension of each row (``png``, ``jpg``, …), in row order."""
        return [self._extensions[row] for row in self._rows]

    def shard_of(self, index: int) -> Path:
        """Return the shard file that holds row ``index``."""
        return self.shards[int(self._shard_ids[self._rows[index]])]

    def _shard_fd(self, shard_id: int) -> int:
        """Return this process's file descriptor of a shard, opening it on first use.

        Descriptors are per process: after a fork (DataLoader workers) the child opens its own.
        ``os.pread`` never moves a shared file offset, so reads are also thread-safe.
        """
        pid = os.getpid()
        if pid != self._fds_pid:
            self._fds = {}  # inherited descriptors belong to the parent; leave them alone
            self._fds_pid = pid
        fd = self._fds.get(shard_id)
        if fd is None:
            fd = os.open(self.shards[shard_id], os.O_RDONLY)
            self._fds[shard_id] = fd
        return fd

    def read_image_bytes(self, index: int) -> bytes:
        """Return the encoded image bytes of row ``index`` exactly as stored in the shard."""
        return self._read_row_bytes(int(self._rows[index]))

    def _read_bytes(self, row: int) -> bytes:
        return self._read_row_bytes(row)

    def _read_row_bytes(self, row: int) -> bytes:
        shard_id = int(self._shard_ids[row])
        size = int(self._sizes[row])
        data = _read_at(self._shard_fd(shard_id), int(self._offsets[row]), size)
        if len(data) != size:
            raise DataError(
                f"{self.shards[shard_id]}: sample '{self._all_keys[row]}' was cut short: read "
                f"{len(data)} of {size} bytes (got a shard that changed after indexing). "
                "Rebuild or re-download the dataset and restart."
            )
        return data

    def _load_image(self, row: int) -> Image.Image:
        data = self._read_row_bytes(row)
        shard = self.shards[int(self._shard_ids[row])]
        return decode_image(data, key=self._all_keys[row], where=shard)

    def _location(self) -> str:
        return f"{len(self.shards)} shards in {self.split_dir}"

    def close(self) -> None:
        """Close the shard files this process opened (they reopen on the next read)."""
        if self._fds_pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds = {}

    def __del__(self) -> None:
        try:  # noqa: SIM105 - no contextlib here: module globals may be gone at shutdown
            self.close()
        except Exception:
            pass

    # -- copies and pickling: never share descriptors --------------------------------------------
    def _fresh_copy(self) -> WdsDataset:
        view = super()._fresh_copy()
        view._fds = {}
        view._fds_pid = os.getpid()
        return view

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fds"] = {}
        state["_fds_pid"] = -1
        return state


# -- encoded rows, for decoding on the model's device ----------------------------------------


class EncodedImages:
    """The rows of an :class:`ImageDataset` (a webdataset split, or any other) as their stored
    bytes: ``Sample.image`` is a 1-D uint8 array of the encoded file (JPEG, PNG, …), read with
    one ``pread`` and never decoded, so DataLoader workers only do I/O and the model's device
    decodes (:class:`~sim_consistency.features.extract.DeviceDecoder`). Map-style, picklable.
    """

    def __init__(self, dataset: ImageDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        ds = self.dataset
        if not 0 <= index < len(ds):
            raise IndexError(f"{ds.name} [{ds.split}]: index {index} out of range for {len(ds)}")
        row = int(ds._rows[index])
        data = np.frombuffer(ds._read_bytes(row), dtype=np.uint8)
        return Sample(
            index=index, key=ds._all_keys[row], image=data, label=int(ds._all_labels[row])
        )


def collate_encoded(batch: list[Sample]) -> Sample:
    """Batch :class:`EncodedImages` rows: int64 ``index``/``label`` tensors, ``key`` a list, and
    ``image`` a list of 1-D uint8 tensors (encoded files differ in length)."""
    import torch

    return Sample(
        index=torch.tensor([int(s.index) for s in batch], dtype=torch.int64),
        key=[s.key for s in batch],
        image=[torch.from_numpy(s.image.copy()) for s in batch],
        label=torch.tensor([int(s.label) for s in batch], dtype=torch.int64),
    )
