"""Content keys: a digest of everything that determines a cache's numbers.

Two caches with the same key hold the same numbers; a cache whose key differs from the current
recipe's is stale and is rebuilt, never reused. The key covers the weights (by content digest,
not file name), the model recipe, the preprocessing, the pooling and block set, the dataset rows
(keys of the selected subset) and the version of the extraction code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sim_consistency.data.subsets import keys_fingerprint

__all__ = ["EXTRACTION_CODE_VERSION", "content_key", "keys_fingerprint"]

#: Bump when a change to the extraction code changes the numbers it writes.
EXTRACTION_CODE_VERSION = "1"

#: Recipe fields that do not change the numbers: names, grouping metadata and file locations
#: (the weights themselves are covered by their content digest).
_NOT_NUMERIC = ("model_id", "metadata", "path", "weights")


def content_key(
    *,
    weights_sha256: str,
    recipe: Mapping[str, Any],
    preprocessing: Mapping[str, Any],
    pooling: Mapping[str, str],
    block_names: Sequence[str],
    dataset: str,
    split: str,
    rows_fingerprint: str,
    storage_dtype: str,
    has_logits: bool,
    code_version: str = EXTRACTION_CODE_VERSION,
) -> str:
    """Return the hex sha256 content key of one feature cache.

    ``recipe`` is the model entry as JSON; fields that do not change the numbers (the id,
    free-form ``metadata``, file paths whose content ``weights_sha256`` covers) are left out.
    """
    payload = {
        "weights_sha256": weights_sha256,
        "recipe": {k: v for k, v in recipe.items() if k not in _NOT_NUMERIC},
        "preprocessing": preprocessing,
        "pooling": dict(pooling),
        "block_names": list(block_names),
        "dataset": dataset,
        "split": split,
        "rows": rows_fingerprint,
        "dtype": storage_dtype,
        "has_logits": has_logits,
        "code_version": code_version,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()
