"""Probe transfer: score a probe trained on one dataset on another through a class map.

A **class map** says, for each label ``j`` of the target dataset, which label(s) of the
probe's source dataset it is: ``map[j]`` is one source label or a list of them. The target's
class scores are the source scores of those labels, the maximum where a target class gathers
several source classes (model-soups' ``project_logits`` for ObjectNet); top-1, top-5 and
balanced accuracy are then computed over the target's classes, as model-soups and Rep2Rep score
an ImageNet-1k model on ImageNet-A/-R (``logits[:, CLASS_SUBLIST]``).

Shipped maps (package data in ``sim_consistency/probe/class_maps/``, source = ImageNet-1k in
the standard torchvision / CLIP_benchmark class order):

========================= ======= =============================================================
dataset                   classes map
========================= ======= =============================================================
``wds/imagenet-a``        200     ``imagenet-a.json`` (model-soups / WiSE-FT ``CLASS_SUBLIST``)
``wds/imagenet-r``        200     ``imagenet-r.json`` (model-soups / WiSE-FT ``CLASS_SUBLIST``)
``wds/imagenetv2``        1000    identity
``wds/imagenet_sketch``   1000    identity
``wds/imagenet1k``        1000    identity
========================= ======= =============================================================

ObjectNet's 113-class map is **not shipped** (ObjectNet's licence keeps its metadata with the
dataset), but it is built from the ``mappings/`` folder every ObjectNet download has: give that
folder (or the ``objectnet-1.0`` folder) as the map, ``--class_map
wds/objectnet=/data/objectnet-1.0/mappings``
(:func:`~sim_consistency.probe.objectnet_map.objectnet_class_map`, model-soups' recipe).
:func:`read_class_map` reads a user file in the same format as the shipped ones: a JSON list,
or an object whose ``"map"`` is that list; a directory is read as ObjectNet's mappings.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sim_consistency.errors import ConfigError, DataError

__all__ = [
    "IDENTITY_1K",
    "SHIPPED_MAPS",
    "ClassMap",
    "parse_class_map",
    "project_scores",
    "read_class_map",
    "read_json_file",
    "shipped_class_map",
]

#: Datasets whose labels are ImageNet-1k's own (identity map over 1000 classes).
IDENTITY_1K = ("wds/imagenet1k", "wds/imagenetv2", "wds/imagenet_sketch")

#: Datasets with a shipped map file (``class_maps/<file>``).
SHIPPED_MAPS = {"wds/imagenet-a": "imagenet-a.json", "wds/imagenet-r": "imagenet-r.json"}

#: A class map: ``targets[j]`` = the source labels of target label ``j``.
ClassMap = tuple[tuple[int, ...], ...]


def parse_class_map(raw: Any, where: str) -> ClassMap:
    """Validate a class map (a JSON list, or ``{"map": list}``); entries are ints or int lists.

    Raises:
        ConfigError: not a non-empty list of non-negative ints / non-empty int lists.
    """
    entries = raw.get("map") if isinstance(raw, dict) else raw
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            f'{where}: a class map is a non-empty JSON list (or an object with a "map" list) '
            "whose entry j is the source label (or list of labels) of target label j."
        )
    out = []
    for j, entry in enumerate(entries):
        labels = entry if isinstance(entry, list) else [entry]
        ok = labels and all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in labels
        )
        if not ok:
            raise ConfigError(
                f"{where}: entry {j} is {entry!r}; expected a non-negative int or a non-empty "
                "list of them (source labels)."
            )
        out.append(tuple(labels))
    return tuple(out)


def read_json_file(path: Path, what: str) -> Any:
    """Return the parsed JSON of ``path``; a ConfigError naming the file and ``what`` it is."""
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} ({exc.strerror}).") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: {what} is not valid JSON ({exc}).") from None


def read_class_map(path: str | Path) -> ClassMap:
    """Read a class-map JSON file (see :func:`parse_class_map`), or build ObjectNet's map from
    its ``mappings`` folder when ``path`` is a directory."""
    path = Path(path)
    if path.is_dir():
        from sim_consistency.probe.objectnet_map import objectnet_class_map

        return objectnet_class_map(path)
    return parse_class_map(read_json_file(path, "the class map"), str(path))


def shipped_class_map(dataset: str) -> ClassMap | None:
    """Return the shipped ImageNet-1k → ``dataset`` map, or ``None`` if none is shipped."""
    if dataset in IDENTITY_1K:
        return tuple((c,) for c in range(1000))
    name = SHIPPED_MAPS.get(dataset)
    if name is None:
        return None
    text = (
        resources.files("sim_consistency.probe").joinpath("class_maps").joinpath(name).read_text()
    )
    return parse_class_map(json.loads(text), f"class_maps/{name}")


def project_scores(
    scores: npt.ArrayLike, source_classes: npt.ArrayLike, class_map: ClassMap, where: str
) -> npt.NDArray[np.float64]:
    """Return target class scores (n, len(class_map)) from source scores (n, C).

    Args:
        scores: the probe's scores, column i scoring source label ``source_classes[i]``.
        source_classes: (C,) source label of each score column.
        class_map: target label j → its source labels.
        where: names the map in errors.

    Raises:
        DataError: a source label of the map is not a class of the probe.
    """
    scores = np.asarray(scores, dtype=np.float64)
    column = {int(c): i for i, c in enumerate(np.asarray(source_classes).tolist())}
    out = np.empty((scores.shape[0], len(class_map)), dtype=np.float64)
    for j, labels in enumerate(class_map):
        missing = [c for c in labels if c not in column]
        if missing:
            raise DataError(
                f"{where}: target label {j} maps to source label(s) {missing}, which the probe "
                f"does not score (its classes: {min(column)}…{max(column)}, {len(column)} in "
                "all). Check that the map and the probe's source dataset belong together."
            )
        cols = [column[c] for c in labels]
        out[:, j] = scores[:, cols].max(axis=1)
    return out
