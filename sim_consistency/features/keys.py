"""Content keys: a digest of everything that determines a cache's numbers.

Two caches with the same key hold the same numbers; a cache whose key differs from the current
recipe's is stale and is rebuilt, never reused. The key covers the weights (by content digest,
not file name), the model recipe, the preprocessing, the pooling and block set, the dataset rows
— every selected row's key, label *and encoded image bytes*
(:meth:`~sim_consistency.data.ImageDataset.content_digest`), so shards rebuilt under the same
keys with other pixels or labels are new data — and the version of the extraction code. No
absolute path enters a key: moving the project root changes nothing.

Downstream outputs (similarity matrices, CKA grids, probes, soup metrics, consistency) hash the
content keys of the caches they read into their own keys, so a changed cache reaches them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sim_consistency.data.subsets import keys_fingerprint
from sim_consistency.outputs import json_digest

__all__ = ["EXTRACTION_CODE_VERSION", "content_key", "keys_fingerprint"]

#: Bump when a change to the extraction code changes the numbers it writes.
EXTRACTION_CODE_VERSION = "2"  # 2: the key covers image bytes and labels; cache schema 2

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
    data_digest: str,
    storage_dtype: str,
    has_logits: bool,
    code_version: str = EXTRACTION_CODE_VERSION,
) -> str:
    """Return the hex sha256 content key of one feature cache.

    ``recipe`` is the model entry as JSON; fields that do not change the numbers (the id,
    free-form ``metadata``, file paths whose content ``weights_sha256`` covers) are left out.
    ``rows_fingerprint`` digests the selected keys in order, ``data_digest`` their labels and
    image bytes (:meth:`~sim_consistency.data.ImageDataset.content_digest`).
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
        "data": data_digest,
        "dtype": storage_dtype,
        "has_logits": has_logits,
        "code_version": code_version,
    }
    return json_digest(payload)
