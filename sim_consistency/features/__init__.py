"""The feature cache: block-wise extraction to HDF5 and its lazy reader."""

from sim_consistency.features.cache import (
    CacheStatus,
    FeatureCache,
    FeatureCacheWriter,
    check_same_keys,
    inspect_cache,
    load_aligned_blocks,
    open_cache,
    quarantine_cache,
    read_cache_attrs,
    require_cache_attrs,
)
from sim_consistency.features.extract import BlockExtractor, BlockSpec, PendingBatch, write_features
from sim_consistency.features.keys import content_key, keys_fingerprint
from sim_consistency.features.pooling import pool_block_output

__all__ = [
    "BlockExtractor",
    "BlockSpec",
    "CacheStatus",
    "FeatureCache",
    "FeatureCacheWriter",
    "PendingBatch",
    "check_same_keys",
    "content_key",
    "inspect_cache",
    "keys_fingerprint",
    "load_aligned_blocks",
    "open_cache",
    "pool_block_output",
    "quarantine_cache",
    "read_cache_attrs",
    "require_cache_attrs",
    "write_features",
]
