"""ObjectNet's 113-class map to ImageNet-1k, built from the ``mappings/`` folder ObjectNet ships.

ObjectNet (Barbu et al., NeurIPS 2019) has 313 classes; 113 of them correspond to one or more
ImageNet-1k classes. The correspondence is not redistributable here, but every ObjectNet
download carries it in ``objectnet-1.0/mappings/``:

* ``folder_to_objectnet_label.json`` — ``{image folder: ObjectNet label}``;
* ``objectnet_to_imagenet_1k.json`` — ``{ObjectNet label: "imagenet name; imagenet name"}``;
* ``imagenet_to_label_2012_v2`` — one ImageNet class name per line, in ImageNet 2012 id order;
* ``pytorch_to_imagenet_2012_id.json`` — ``{torchvision class index: ImageNet 2012 id}``.

:func:`objectnet_class_map` follows model-soups' ``datasets/objectnet.py``
(``get_metadata`` / ``project_logits``), which CLIP_benchmark copies and whose ObjectNet
webdataset Rep2Rep uses: the target classes are the image folders of the mapped ObjectNet
labels **sorted by folder name** (target label j is the j-th of them — the labels CLIP_benchmark's
``wds/objectnet`` carries), and target class j's score is the maximum of the ImageNet-1k
scores of its classes. The line of ``imagenet_to_label_2012_v2`` is matched to the ids of
``pytorch_to_imagenet_2012_id.json`` from the ids' own base: model-soups reads 0-based ids
(line i ↔ id i); a file whose ids start at 1 is read as line i ↔ id i + 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sim_consistency.errors import ConfigError
from sim_consistency.probe.transfer import read_json_file

__all__ = ["MAPPING_FILES", "objectnet_class_map", "objectnet_mappings_dir"]

MAPPING_FILES = (
    "folder_to_objectnet_label.json",
    "objectnet_to_imagenet_1k.json",
    "imagenet_to_label_2012_v2",
    "pytorch_to_imagenet_2012_id.json",
)


def objectnet_mappings_dir(path: str | Path) -> Path | None:
    """Return the ``mappings`` folder at ``path`` (itself, or ``path/mappings``), else None."""
    path = Path(path)
    for folder in (path, path / "mappings"):
        if folder.is_dir() and (folder / MAPPING_FILES[1]).is_file():
            return folder
    return None


def _json(folder: Path, name: str) -> Any:
    return read_json_file(folder / name, "ObjectNet's mapping")


def objectnet_class_map(mappings: str | Path) -> tuple[tuple[int, ...], ...]:
    """Return the ImageNet-1k → ObjectNet class map (entry j: the ImageNet indices of target j).

    Args:
        mappings: ObjectNet's ``mappings`` folder, or the ``objectnet-1.0`` folder holding it.

    Raises:
        ConfigError: a file is missing or malformed, or a name/id does not resolve (the message
            names the file and the entry).
    """
    folder = objectnet_mappings_dir(mappings)
    if folder is None:
        raise ConfigError(
            f"{mappings}: not ObjectNet's mappings folder (expected {', '.join(MAPPING_FILES)} "
            "in it or in its mappings/ subfolder)."
        )
    missing = [n for n in MAPPING_FILES if not (folder / n).is_file()]
    if missing:
        raise ConfigError(f"{folder}: missing {', '.join(missing)} (ObjectNet's mappings).")
    folder_of = {label: f for f, label in _json(folder, MAPPING_FILES[0]).items()}
    to_imagenet = _json(folder, MAPPING_FILES[1])
    names = (folder / MAPPING_FILES[2]).read_text().splitlines()
    pytorch_of_id = {int(v): int(k) for k, v in _json(folder, MAPPING_FILES[3]).items()}
    if not pytorch_of_id:
        raise ConfigError(f"{folder / MAPPING_FILES[3]}: empty.")
    base = min(pytorch_of_id)
    line_of = {name.strip(): i for i, name in enumerate(names) if name.strip()}
    by_folder: dict[str, tuple[int, ...]] = {}
    for label, joined in to_imagenet.items():
        if label not in folder_of:
            raise ConfigError(
                f"{folder / MAPPING_FILES[1]}: ObjectNet label {label!r} has no image folder in "
                f"{MAPPING_FILES[0]}."
            )
        indices = []
        for name in str(joined).split("; "):
            if name not in line_of:
                raise ConfigError(
                    f"{folder / MAPPING_FILES[1]}: {label!r} maps to ImageNet class {name!r}, "
                    f"which is not a line of {MAPPING_FILES[2]}."
                )
            class_id = line_of[name] + base
            if class_id not in pytorch_of_id:
                raise ConfigError(
                    f"{folder / MAPPING_FILES[3]}: no torchvision index for ImageNet id "
                    f"{class_id} ({name!r})."
                )
            indices.append(pytorch_of_id[class_id])
        by_folder[folder_of[label]] = tuple(indices)
    return tuple(by_folder[f] for f in sorted(by_folder))
