"""Rep2Rep's bare dataset names: datasets it derives from others instead of storing.

Rep2Rep's dataset lists (``webdatasets_*.txt``) mix ``wds/<name>`` webdatasets with names its
``clip_benchmark.data.builder.build_dataset`` builds on the fly; they resolve here the same way,
from the same data, so that the lists load unchanged:

* ``cifar100-coarse`` — ``wds/vtab/cifar100`` (``datasets/wds/wds_vtab-cifar100``) with each
  fine label replaced by its CIFAR-100 superclass (20 classes, the dataset's own coarse labels).
* ``entity13``, ``entity30``, ``living17``, ``nonliving26`` — BREEDS tasks on ``wds/imagenet1k``
  (``datasets/wds/wds_imagenet1k``): the ``train`` split keeps the rows of the task's source
  (train) ImageNet classes, every other split those of its target (test) classes, each labelled
  by its superclass, in the webdataset's row order. The class tables are read from
  ``datasets/breeds/<name>.json`` (keys ``train_classes``, ``test_classes``,
  ``superclass_mapping`` — ImageNet class index to superclass index — and optionally
  ``superclass_names``): export them from Rep2Rep's ``get_breeds_task(<name>)``
  (``clip_benchmark/data/datasets/breeds.py``) or from the ``robustness`` library's
  ``make_<name>`` helpers.
* ``imagenet-subset-<N>k`` — torchvision's ImageNet folder ``datasets/imagenet_torch``
  (``<split>/<wnid>/<image>``; ``test`` reads ``val`` as Rep2Rep does) restricted to the rows
  listed in ``datasets/imagenet_torch/imagenet-<N>k-<split>.json`` (class -> row indices in
  torchvision's ImageFolder order, the file Rep2Rep's ``generate_imagenet_subset_indices.py``
  writes), in the file's order.

Nothing is checked until a split is loaded; a missing input then raises
:class:`~sim_consistency.errors.MissingInputError` naming the dataset, the path looked at and
how to provide it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from sim_consistency.data.dataset import ImageDataset, Transform
from sim_consistency.data.imagefolder import ImageFolderDataset
from sim_consistency.data.wds import DOWNLOAD_HINT, WdsDataset
from sim_consistency.errors import DataError, MissingInputError
from sim_consistency.project import ProjectLocation

__all__ = [
    "BREEDS_TASKS",
    "CIFAR100_SUPERCLASSES",
    "cifar100_coarse_map",
    "base_webdataset",
    "is_rep2rep_dataset",
    "load_rep2rep_dataset",
]

BREEDS_TASKS = ("entity13", "entity30", "living17", "nonliving26")
_IMAGENET_SUBSET = re.compile(r"^imagenet-subset-(\d+)k$")

#: CIFAR-100's superclasses (coarse label i = i-th entry) and their fine classes.
CIFAR100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit and vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household electrical devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large man-made outdoor things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large natural outdoor scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large omnivores and herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium-sized mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles 1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles 2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}


def cifar100_coarse_map() -> np.ndarray:
    """``map[fine_label] = coarse_label`` (fine labels are CIFAR-100's sorted class names)."""
    fine = sorted(name for names in CIFAR100_SUPERCLASSES.values() for name in names)
    coarse_of = {
        name: i for i, names in enumerate(CIFAR100_SUPERCLASSES.values()) for name in names
    }
    return np.array([coarse_of[name] for name in fine], dtype=np.int64)


def is_rep2rep_dataset(name: str) -> bool:
    """Whether ``name`` is one of Rep2Rep's bare (derived) dataset names."""
    return name == "cifar100-coarse" or name in BREEDS_TASKS or bool(_IMAGENET_SUBSET.match(name))


def base_webdataset(name: str) -> str | None:
    """The ``wds/<name>`` a Rep2Rep derived dataset is read from (``None``: not a webdataset)."""
    if name == "cifar100-coarse":
        return "wds/vtab/cifar100"
    if name in BREEDS_TASKS:
        return "wds/imagenet1k"
    return None


def load_rep2rep_dataset(
    name: str, split: str, *, location: ProjectLocation, transform: Transform | None = None
) -> ImageDataset:
    """Return one split of a Rep2Rep derived dataset (see the module docstring)."""
    if name == "cifar100-coarse":
        return _cifar100_coarse(split, location, transform)
    if name in BREEDS_TASKS:
        return _breeds(name, split, location, transform)
    match = _IMAGENET_SUBSET.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a Rep2Rep dataset name")
    return _imagenet_subset(name, match.group(1), split, location, transform)


def _base_wds(
    name: str, base: str, split: str, location: ProjectLocation, transform: Transform | None
) -> WdsDataset:
    folder = location.wds_dataset_dir(base)
    if not folder.is_dir():
        raise MissingInputError(
            f"dataset '{name}' is built from wds/{base}, whose folder {folder} does not exist. "
            f"Download it with `python {DOWNLOAD_HINT} --datasets wds/{base} "
            f"--splits {split} --project_root {location.root}`, or copy CLIP_benchmark's "
            f"{folder.name} folder there."
        )
    return WdsDataset(folder, split, name=f"wds/{base}", transform=transform)


def _cifar100_coarse(
    split: str, location: ProjectLocation, transform: Transform | None
) -> ImageDataset:
    base = _base_wds("cifar100-coarse", "vtab/cifar100", split, location, transform)
    if base.n_classes != 100:
        raise DataError(
            f"dataset 'cifar100-coarse': {base.root} has {base.n_classes} classes, CIFAR-100 "
            "has 100 (is it the right dataset?)."
        )
    return base.relabel(cifar100_coarse_map(), list(CIFAR100_SUPERCLASSES), name="cifar100-coarse")


def _breeds(
    name: str, split: str, location: ProjectLocation, transform: Transform | None
) -> ImageDataset:
    file = location.datasets / "breeds" / f"{name}.json"
    if not file.is_file():
        raise MissingInputError(
            f"dataset '{name}' (a BREEDS task on wds/imagenet1k) needs its class tables in "
            f"{file} (not found): a JSON object with 'train_classes', 'test_classes' (ImageNet "
            "class indices) and 'superclass_mapping' (ImageNet class index -> superclass "
            "index), optionally 'superclass_names'. Write it from Rep2Rep's "
            f"get_breeds_task('{name}') (clip_benchmark/data/datasets/breeds.py) or the "
            f"robustness library's make_{name} helper."
        )
    classes, mapping, names = _read_breeds(file, split)
    base = _base_wds(name, "imagenet1k", split, location, transform)
    rows = np.flatnonzero(np.isin(base.labels, sorted(classes)))
    table = np.full(max(max(mapping), int(base.labels.max(initial=0))) + 1, -1, dtype=np.int64)
    for cls, sup in mapping.items():
        table[cls] = sup
    return base.subset(rows).relabel(table, names, name=name)


def _read_breeds(file: Path, split: str) -> tuple[set[int], dict[int, int], list[str]]:
    try:
        raw: Any = json.loads(file.read_text())
        key = "train_classes" if split == "train" else "test_classes"
        classes = {int(c) for c in raw[key]}
        mapping = {int(k): int(v) for k, v in raw["superclass_mapping"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(
            f"{file}: not a BREEDS task file ({type(exc).__name__}: {exc}). It needs "
            "'train_classes', 'test_classes' and 'superclass_mapping'."
        ) from None
    unmapped = sorted(classes - mapping.keys())
    if unmapped:
        raise DataError(f"{file}: classes {unmapped[:5]} have no entry in 'superclass_mapping'.")
    n_super = max(mapping.values()) + 1
    names = raw.get("superclass_names") or [f"superclass_{i}" for i in range(n_super)]
    if len(names) != n_super:
        raise DataError(
            f"{file}: 'superclass_names' has {len(names)} names for {n_super} superclasses."
        )
    return classes, mapping, [str(n) for n in names]


def _imagenet_subset(
    name: str, thousands: str, split: str, location: ProjectLocation, transform: Transform | None
) -> ImageDataset:
    root = location.datasets / "imagenet_torch"
    split = "val" if split == "test" else split
    index_file = root / f"imagenet-{thousands}k-{split}.json"
    how = (
        f"Put torchvision's ImageNet folder (<split>/<wnid>/<image>, as torchvision.datasets."
        f"ImageNet unpacks it) in {root} and Rep2Rep's index file (written by its "
        "generate_imagenet_subset_indices.py) next to it."
    )
    if not (root / split).is_dir():
        raise MissingInputError(
            f"dataset '{name}' is read from ImageNet's '{split}' split in {root / split} (not "
            f"found). {how}"
        )
    if not index_file.is_file():
        raise MissingInputError(
            f"dataset '{name}' needs the subset indices {index_file} (not found). {how}"
        )
    try:
        groups = json.loads(index_file.read_text())
        indices = [int(i) for group in groups.values() for i in group]
    except (ValueError, TypeError, AttributeError) as exc:
        raise DataError(
            f"{index_file}: not a subset index file ({type(exc).__name__}: {exc}); expected an "
            "object mapping each class to a list of row indices."
        ) from None
    base = ImageFolderDataset(root, split, name=name, transform=transform)
    try:
        return base.subset(indices)
    except (IndexError, ValueError) as exc:
        raise DataError(f"{index_file}: {exc}") from None
