"""Deterministic, seeded, class-stratified subsets, saved so that every model sees the same rows.

Rep2Rep's rule: at most ``max_samples`` rows, at most ``ceil(max_samples / C)`` per class (``C``
= the number of classes present), drawn uniformly without replacement within each class.
:func:`stratified_subset` computes the row indices; :func:`load_or_create_subset` stores them in
``<root>/datasets/subsets/<dataset_slug>/subset_indices_<split>.json`` with the parameters and a
fingerprint of the source rows, and reuses the file only when both still match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sim_consistency.errors import ConfigError
from sim_consistency.io import atomic_write_text
from sim_consistency.project import ProjectLocation

__all__ = [
    "stratified_subset",
    "load_or_create_subset",
    "keys_fingerprint",
    "SUBSET_METHOD",
    "SUBSET_SCHEMA_VERSION",
]

log = logging.getLogger(__name__)

SUBSET_METHOD = "stratified_v1"
"""Name of the selection rule; part of the saved parameters, bump it if the rule changes."""

SUBSET_SCHEMA_VERSION = 1


def _check_positive(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(
            f"stratified_subset: {name} must be a positive integer or None (got {value!r})."
        )
    return int(value)


def stratified_subset(
    labels: npt.ArrayLike,
    *,
    max_samples: int | None = None,
    per_class_cap: int | None = None,
    seed: int = 0,
) -> npt.NDArray[np.int64]:
    """Return sorted row indices of a seeded, class-stratified subset of ``labels``.

    Each class keeps ``min(count, cap)`` of its rows, drawn uniformly without replacement, where
    ``cap = per_class_cap`` or, if that is ``None``, ``ceil(max_samples / C)`` with ``C`` the
    number of distinct labels (Rep2Rep's rule). If the kept rows still exceed ``max_samples``
    (the cap rounds up, or an explicit cap is large), they are trimmed evenly: each class's
    draw is an ordered random sample, rows are taken rank by rank (every class's 1st draw, then
    every class's 2nd, …, classes in a seeded random order within a rank) until ``max_samples``
    rows are taken. Trimming thus only ever drops the last-ranked draws of the classes that
    keep the most rows, so class counts stay as balanced as the data allows.

    Args:
        labels: ``(n,)`` integer class labels, one per row.
        max_samples: at most this many rows in all (``None``: no total limit).
        per_class_cap: at most this many rows per class (``None``: from ``max_samples``).
        seed: seed of ``np.random.default_rng``; the result depends only on labels and
            arguments.

    Returns:
        ``(m,)`` int64 row indices, sorted ascending; all rows (``arange(n)``) when both
        ``max_samples`` and ``per_class_cap`` are ``None``.

    Raises:
        ConfigError: a limit is not a positive integer, or labels are not 1-D integers.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ConfigError(
            f"stratified_subset: labels must be a 1-D integer array (got shape {labels.shape}, "
            f"dtype {labels.dtype})."
        )
    max_samples = _check_positive("max_samples", max_samples)
    per_class_cap = _check_positive("per_class_cap", per_class_cap)
    if max_samples is None and per_class_cap is None:
        return np.arange(labels.size, dtype=np.int64)
    classes = np.unique(labels)
    if classes.size == 0:
        return np.zeros(0, dtype=np.int64)
    if per_class_cap is not None:
        cap = per_class_cap
    else:
        assert max_samples is not None  # both None returned above
        cap = math.ceil(max_samples / classes.size)

    rng = np.random.default_rng(seed)
    draws = []  # per class, in class order: a random ordered sample of at most `cap` rows
    for label in classes:
        rows = np.flatnonzero(labels == label)
        draws.append(rng.permutation(rows)[:cap])
    class_order = rng.permutation(classes.size)
    ranked = [draws[c][rank] for rank in range(cap) for c in class_order if rank < draws[c].size]
    if max_samples is not None:
        ranked = ranked[:max_samples]
    return np.sort(np.asarray(ranked, dtype=np.int64))


def keys_fingerprint(keys: Sequence[str]) -> str:
    """Return the sha256 hex digest of the keys, in order (one per line, UTF-8)."""
    digest = hashlib.sha256()
    for key in keys:
        digest.update(key.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def _labels_fingerprint(labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels, dtype="<i8").tobytes()).hexdigest()


def _stale_reason(stored: Any, expected: dict[str, Any], keys: Sequence[str]) -> str | None:
    """Return why a stored subset file cannot be reused, or ``None`` if it can."""
    if not isinstance(stored, dict):
        return "not a JSON object"
    for field, value in expected.items():
        if stored.get(field) != value:
            return f"{field} is {stored.get(field)!r}, now {value!r}"
    indices = stored.get("indices")
    stored_keys = stored.get("keys")
    if not isinstance(indices, list) or not isinstance(stored_keys, list):
        return "indices or keys missing"
    if len(indices) != len(stored_keys) or not all(
        isinstance(i, int) and 0 <= i < len(keys) for i in indices
    ):
        return "indices out of range"
    if [keys[i] for i in indices] != stored_keys:
        return "keys do not match the indices"
    return None


def load_or_create_subset(
    location: ProjectLocation,
    dataset: str,
    split: str,
    keys: Sequence[str],
    labels: npt.ArrayLike,
    *,
    max_samples: int | None,
    per_class_cap: int | None,
    seed: int,
) -> npt.NDArray[np.int64]:
    """Return the subset's row indices, reusing the saved file when it still applies.

    The file ``location.subset_indices_file(dataset, split)`` stores the parameters
    (``max_samples``, ``per_class_cap``, ``seed``, ``method``), ``n_source_rows``, sha256
    fingerprints of the source keys and labels, the indices and their keys. It is reused only
    if all of those match the current request and source; otherwise the subset is recomputed
    with :func:`stratified_subset` and the file rewritten atomically, with a warning that says
    what changed. No subset requested (both limits ``None``) returns all rows and touches no file.

    Args:
        location: the project root's folders.
        dataset: dataset name (``wds/digits``).
        split: split name.
        keys: ``(n,)`` keys of the full split, in row order.
        labels: ``(n,)`` labels of the full split.
        max_samples: total limit, see :func:`stratified_subset`.
        per_class_cap: per-class limit, see :func:`stratified_subset`.
        seed: selection seed.

    Returns:
        ``(m,)`` int64 sorted row indices into the full split.
    """
    labels = np.asarray(labels)
    if len(keys) != labels.size:
        raise ConfigError(
            f"load_or_create_subset: {dataset} [{split}] has {len(keys)} keys but "
            f"{labels.size} labels (got mismatched arrays); pass the full split's keys and labels."
        )
    if max_samples is None and per_class_cap is None:
        return np.arange(labels.size, dtype=np.int64)
    expected = {
        "schema_version": SUBSET_SCHEMA_VERSION,
        "dataset": dataset,
        "split": split,
        "params": {
            "method": SUBSET_METHOD,
            "max_samples": max_samples,
            "per_class_cap": per_class_cap,
            "seed": seed,
        },
        "n_source_rows": len(keys),
        "source_keys_sha256": keys_fingerprint(keys),
        "source_labels_sha256": _labels_fingerprint(labels),
    }
    path = location.subset_indices_file(dataset, split)
    if path.is_file():
        reason: str | None
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            stored, reason = None, f"unreadable ({exc})"
        else:
            reason = _stale_reason(stored, expected, keys)
        if reason is None:
            return np.asarray(stored["indices"], dtype=np.int64)
        log.warning("%s: stale subset file (%s); recomputing and rewriting it", path, reason)
    indices = stratified_subset(
        labels, max_samples=max_samples, per_class_cap=per_class_cap, seed=seed
    )
    record = {
        **expected,
        "n_samples": int(indices.size),
        "indices": indices.tolist(),
        "keys": [keys[i] for i in indices],
    }
    atomic_write_text(Path(path), json.dumps(record, indent=1) + "\n")
    return indices
