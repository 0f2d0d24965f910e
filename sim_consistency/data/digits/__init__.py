"""``wds/digits``: scikit-learn's 8×8 digits as webdataset shards, built by the project itself.

The builder lives in :mod:`sim_consistency.data.digits.builder`; ``python -m
sim_consistency.data.digits --project_root DIR`` runs its :func:`main` (via ``__main__.py``, so
running the package does not re-import the module it executes).
"""

from __future__ import annotations

from sim_consistency.data.digits.builder import (
    BUILD_INFO,
    BUILDER_VERSION,
    DIGITS_CLASSNAMES,
    DIGITS_DATASET,
    DIGITS_SPLITS,
    MAX_SHARD_SAMPLES,
    SEED,
    build_digits,
    digits_key,
    digits_pixels,
    digits_split_indices,
    main,
)

__all__ = [
    "BUILD_INFO",
    "BUILDER_VERSION",
    "DIGITS_CLASSNAMES",
    "DIGITS_DATASET",
    "DIGITS_SPLITS",
    "MAX_SHARD_SAMPLES",
    "SEED",
    "build_digits",
    "digits_key",
    "digits_pixels",
    "digits_split_indices",
    "main",
]
