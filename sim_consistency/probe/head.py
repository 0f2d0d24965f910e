"""Accuracy of a model's own classification head from cached ``/logits``.

Shared by ``single_model_evaluation`` (the ``kind=head`` row next to the probes) and the
soup-metrics stage (held-out accuracy of soups and ingredients without a forward pass).

Subset label spaces follow model-soups' logit projection: a 1000-class ImageNet head scored on
a 200-class subset (ImageNet-R, -A) keeps only the logit columns listed, in label order, in the
dataset folder's :data:`CLASS_MASK_FILE` (``[c_0, c_1, …]``: label ``j`` is logit column
``c_j``), then takes the argmax over those columns.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sim_consistency.errors import DataError
from sim_consistency.features.cache import FeatureCache
from sim_consistency.probe.linear_probe import classification_metrics

__all__ = ["CLASS_MASK_FILE", "cache_head_accuracy", "head_accuracy", "read_class_mask"]

#: Optional file in a dataset's folder: JSON list of logit columns, one per label.
CLASS_MASK_FILE = "class_index_mask.json"


def read_class_mask(dataset_dir: str | os.PathLike) -> list[int] | None:
    """Return the class-index mask of a dataset folder, or ``None`` when it has none.

    Args:
        dataset_dir: the dataset's folder (e.g. ``<root>/datasets/wds/wds_imagenet-r``).

    Raises:
        DataError: :data:`CLASS_MASK_FILE` exists but is not a JSON list of non-negative ints.
    """
    path = Path(dataset_dir) / CLASS_MASK_FILE
    if not path.is_file():
        return None
    try:
        mask = json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); expected a list of ints.") from exc
    is_ints = isinstance(mask, list) and all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in mask
    )
    if not is_ints or not mask:
        raise DataError(
            f"{path}: expected a non-empty JSON list of logit column indices, one per label "
            f"(got {str(mask)[:80]})."
        )
    if len(set(mask)) != len(mask):
        raise DataError(f"{path}: logit columns repeat; each label needs its own column.")
    return mask


def head_accuracy(
    logits: npt.ArrayLike, labels: npt.ArrayLike, *, class_mask: Sequence[int] | None = None
) -> dict[str, Any]:
    """Return the metrics of a model's own classification head from its cached logits.

    With ``class_mask`` the logits are projected as model-soups does for subset label spaces
    (ImageNet-R/-A's 200 classes): ``logits[:, class_mask]``, and ``labels`` index the masked
    columns (label j is logit column ``class_mask[j]``).

    Args:
        logits: (n, C) logits.
        labels: (n,) labels in ``[0, C)`` (or ``[0, len(class_mask))``).
        class_mask: logit columns to keep, in label order.

    Returns:
        See :func:`classification_metrics`; plus ``n_classes`` of the scored label space.

    Raises:
        DataError: a label or a mask index is out of range, or the row counts differ.
    """
    logits = np.asarray(logits, dtype=np.float32)
    labels = np.asarray(labels)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise DataError(
            f"head_accuracy: logits of shape {logits.shape} do not match {labels.shape[0]} labels."
        )
    if class_mask is not None:
        mask = np.asarray(class_mask, dtype=np.int64)
        if mask.size == 0 or mask.min() < 0 or mask.max() >= logits.shape[1]:
            raise DataError(
                f"head_accuracy: class_mask indexes columns {mask.min() if mask.size else '-'}"
                f"…{mask.max() if mask.size else '-'} but the logits have {logits.shape[1]} "
                "columns. The mask must list logit columns of the model's head."
            )
        logits = logits[:, mask]
    n_classes = logits.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(
            f"head_accuracy: labels range {labels.min()}…{labels.max()} but the head scores "
            f"{n_classes} classes; give a class_mask mapping labels to logit columns."
        )
    return {**classification_metrics(logits, labels), "n_classes": n_classes}


def cache_head_accuracy(
    cache: FeatureCache, *, class_mask: Sequence[int] | None = None
) -> dict[str, Any]:
    """Return :func:`head_accuracy` of an open feature cache's ``/logits`` and ``/labels``.

    Args:
        cache: an open test-split cache (:func:`~sim_consistency.features.open_cache`).
        class_mask: logit columns, one per label (:func:`read_class_mask`).

    Raises:
        CacheError: the cache has no ``/logits`` (model without a classification head).
        DataError: labels or mask do not fit the head (the message names the file).
    """
    try:
        return head_accuracy(cache.logits, cache.labels, class_mask=class_mask)
    except DataError as exc:
        raise DataError(f"{cache.path}: {exc}") from None
