"""Datasets by name: parse ``wds/<name>`` / ``imagefolder:<path>``, read dataset lists, load.

This is the one door through which stages get data (CLIP_benchmark style: a dataset is a name).
``wds/<name>`` lives in ``<root>/datasets/wds/wds_<name, '/' -> '-'>``; datasets listed in
:data:`DATASET_BUILDERS` (``wds/digits``) and :data:`DERIVED_DATASET_BUILDERS`
(``wds/digits_rotated``, ``wds/digits_noisy``) are built there on first use. ``imagefolder:<path>``
points at a torchvision ImageFolder tree; a relative path is taken from the current directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sim_consistency.data.dataset import ImageDataset, Transform
from sim_consistency.data.digits import build_digits
from sim_consistency.data.digits.derived import build_digits_noisy, build_digits_rotated
from sim_consistency.data.imagefolder import ImageFolderDataset
from sim_consistency.data.rep2rep_datasets import is_rep2rep_dataset, load_rep2rep_dataset
from sim_consistency.data.subsets import load_or_create_subset
from sim_consistency.data.wds import WdsDataset
from sim_consistency.errors import ConfigError, MissingInputError
from sim_consistency.project import ProjectLocation

__all__ = [
    "DatasetName",
    "DATASET_BUILDERS",
    "DERIVED_DATASET_BUILDERS",
    "VALID_DATASET_FORMS",
    "parse_dataset_name",
    "read_dataset_list",
    "read_dataset_entries",
    "dataset_dir",
    "load_dataset",
]

DATASET_BUILDERS: dict[str, Callable[..., Path]] = {"digits": build_digits}
"""``wds/<name>`` datasets the project builds itself on first use: name -> builder(location)."""

DERIVED_DATASET_BUILDERS: dict[str, Callable[..., Path]] = {
    "digits_rotated": build_digits_rotated,
    "digits_noisy": build_digits_noisy,
}
"""Datasets derived from a built-in one (same rows and keys, transformed images; see
:mod:`sim_consistency.data.digits.derived`), also built on first use: name -> builder(location)."""

VALID_DATASET_FORMS = (
    "'wds/<name>' (CLIP_benchmark webdataset, e.g. 'wds/vtab/cifar10', 'wds/digits') or "
    "'imagefolder:<path>' (torchvision ImageFolder tree <path>/<split>/<class>/<image>), or "
    "one of Rep2Rep's derived names (cifar100-coarse, entity13, entity30, living17, "
    "nonliving26, imagenet-subset-<N>k)"
)

_WDS_NAME = re.compile(r"^[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*$")


@dataclass(frozen=True)
class DatasetName:
    """A parsed dataset name.

    Attributes:
        dataset: the name as given (``wds/vtab/cifar10``, ``imagefolder:/data/pets``).
        kind: ``"wds"``, ``"imagefolder"`` or ``"rep2rep"`` (Rep2Rep's derived datasets, see
            :mod:`sim_consistency.data.rep2rep_datasets`).
        name: for ``wds``, the name without the prefix (``vtab/cifar10``); for ``imagefolder``,
            the path as given; for ``rep2rep``, the name.
    """

    dataset: str
    kind: Literal["wds", "imagefolder", "rep2rep"]
    name: str


def parse_dataset_name(name: str) -> DatasetName:
    """Return the parsed form of a dataset name.

    Raises:
        ConfigError: the name is neither ``wds/<name>`` nor ``imagefolder:<path>``; the message
            lists the valid forms.
    """
    if not isinstance(name, str):
        raise ConfigError(
            f"dataset name must be a string (got {name!r}). Use {VALID_DATASET_FORMS}."
        )
    if name.startswith("wds/"):
        rest = name[len("wds/") :]
        if not _WDS_NAME.match(rest) or any(part in (".", "..") for part in rest.split("/")):
            raise ConfigError(
                f"dataset '{name}': invalid webdataset name (got {rest!r} after 'wds/'). Use "
                "letters, digits, '_', '-', '.' and '/' between parts, e.g. 'wds/vtab/cifar10'."
            )
        return DatasetName(dataset=name, kind="wds", name=rest)
    if name.startswith("imagefolder:"):
        path = name[len("imagefolder:") :]
        if not path.strip():
            raise ConfigError(
                f"dataset '{name}': imagefolder needs a path (got nothing after 'imagefolder:'). "
                "Write 'imagefolder:/data/my_images'."
            )
        return DatasetName(dataset=name, kind="imagefolder", name=path)
    if is_rep2rep_dataset(name):
        return DatasetName(dataset=name, kind="rep2rep", name=name)
    hint = ""
    if "/" not in name and ":" not in name:
        hint = f" Did you mean 'wds/{name}'?"
    raise ConfigError(f"unknown dataset name {name!r}. Use {VALID_DATASET_FORMS}.{hint}")


def read_dataset_entries(values: Sequence[str]) -> list[tuple[str, str]]:
    """Return ``(entry, origin)`` pairs from names and ``.txt`` list files, unvalidated.

    A value ending in ``.txt`` is a file with one entry per line; ``#`` starts a comment and
    blank lines are skipped. ``origin`` says where an entry came from (``list.txt, line 3`` or
    ``argument``) so that callers can name it in an error.

    Raises:
        MissingInputError: a ``.txt`` file does not exist.
    """
    entries: list[tuple[str, str]] = []
    for value in values:
        if not value.endswith(".txt"):
            entries.append((value, "argument"))
            continue
        path = Path(value)
        if not path.is_file():
            raise MissingInputError(
                f"{path}: dataset list file not found. Give dataset names or a .txt file with "
                "one name per line."
            )
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            entry = line.split("#", 1)[0].strip()
            if entry:
                entries.append((entry, f"{path}, line {number}"))
    return entries


def read_dataset_list(values: Sequence[str]) -> list[str]:
    """Return dataset names from a mix of names and ``.txt`` list files (Rep2Rep's ``--datasets``).

    A value ending in ``.txt`` is a file with one dataset name per line; ``#`` starts a comment,
    blank lines are skipped. Every name is checked with :func:`parse_dataset_name`. Names keep
    their first-seen order; repeats are dropped (each dataset is processed once).

    Raises:
        MissingInputError: a ``.txt`` file does not exist.
        ConfigError: a name is invalid (the message names file and line), or no name is given.
    """
    names: list[str] = []
    for entry, origin in read_dataset_entries(values):
        try:
            parse_dataset_name(entry)
        except ConfigError as exc:
            if origin == "argument":
                raise
            raise ConfigError(f"{origin}: {exc}") from None
        names.append(entry)
    if not names:
        raise ConfigError(
            f"no dataset names given (got {list(values)!r}). Pass names such as wds/digits or a "
            ".txt file listing them."
        )
    return list(dict.fromkeys(names))


def dataset_dir(dataset: str, *, location: ProjectLocation) -> Path:
    """Return the folder that holds ``dataset`` (for ``imagefolder:``, the absolute path)."""
    parsed = parse_dataset_name(dataset)
    if parsed.kind == "wds":
        return location.wds_dataset_dir(parsed.name)
    if parsed.kind == "rep2rep":
        raise ConfigError(
            f"dataset '{dataset}' has no folder of its own: Rep2Rep derives it from another "
            "dataset (see sim_consistency.data.rep2rep_datasets)."
        )
    return Path(os.path.abspath(Path(parsed.name).expanduser()))


def load_dataset(
    dataset: str,
    split: str,
    *,
    location: ProjectLocation,
    transform: Transform | None = None,
    max_samples: int | None = None,
    per_class_cap: int | None = None,
    seed: int = 0,
) -> ImageDataset:
    """Return one split of a dataset by name, with the project's saved subset applied.

    ``wds/<name>`` datasets in :data:`DATASET_BUILDERS` or :data:`DERIVED_DATASET_BUILDERS` are
    built (or checked and reused) first.
    With ``max_samples`` or ``per_class_cap`` set, the rows are restricted to the seeded,
    class-stratified subset saved under ``<root>/datasets/subsets`` (see
    :func:`~sim_consistency.data.subsets.load_or_create_subset`), so every model sees the same
    rows in the same order.

    Args:
        dataset: ``wds/<name>`` or ``imagefolder:<path>``.
        split: split folder name (``train``, ``val``, ``test``).
        location: the project root's folders.
        transform: applied to each decoded RGB ``PIL.Image`` (e.g. a model's eval transform).
        max_samples: at most this many rows (``None``: no limit).
        per_class_cap: at most this many rows per class (``None``: ``ceil(max_samples / C)``).
        seed: subset seed.

    Raises:
        ConfigError: the name is invalid. MissingInputError / DataError: see the loaders.
    """
    parsed = parse_dataset_name(dataset)
    full: ImageDataset
    if parsed.kind == "rep2rep":
        full = load_rep2rep_dataset(dataset, split, location=location, transform=transform)
    elif parsed.kind == "wds":
        folder = dataset_dir(dataset, location=location)
        builder = DATASET_BUILDERS.get(parsed.name) or DERIVED_DATASET_BUILDERS.get(parsed.name)
        if builder is not None:
            folder = builder(location)
        full = WdsDataset(folder, split, name=dataset, transform=transform)
    else:
        full = ImageFolderDataset(
            dataset_dir(dataset, location=location), split, name=dataset, transform=transform
        )
    if max_samples is None and per_class_cap is None:
        return full
    indices = load_or_create_subset(
        location,
        dataset,
        split,
        full.keys,
        full.labels,
        max_samples=max_samples,
        per_class_cap=per_class_cap,
        seed=seed,
    )
    return full.subset(indices)
