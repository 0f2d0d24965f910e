"""Models: a models-config entry -> network + eval transform + blocks (one factory, one table).

``create_model(spec, specs)`` builds any source (timm, open_clip, checkpoint, variant) the same
way; :data:`BLOCK_FAMILIES` is the one place that knows which modules are blocks.
"""

from __future__ import annotations

from sim_consistency.models.blocks import (
    BLOCK_FAMILIES,
    BlockFamily,
    BlockInfo,
    describe_blocks,
    detect_family,
    find_block_names,
    n_prefix_tokens,
)
from sim_consistency.models.checkpoints import (
    load_state_dict_file,
    normalize_state_dict,
    state_dict_sha256,
)
from sim_consistency.models.classifier import ImageClassifier
from sim_consistency.models.factory import (
    REP2REP_BLOCK,
    LoadedModel,
    Rep2RepBlock,
    create_model,
    default_pooling,
    forward_logits,
    init_seed,
)
from sim_consistency.models.sources import (
    MODEL_SOURCES,
    BuiltModel,
    architecture_spec,
    hf_hub_cache_dir,
    resolve_hub_file,
)

__all__ = [
    "REP2REP_BLOCK",
    "Rep2RepBlock",
    "BLOCK_FAMILIES",
    "MODEL_SOURCES",
    "BlockFamily",
    "BlockInfo",
    "BuiltModel",
    "ImageClassifier",
    "LoadedModel",
    "architecture_spec",
    "create_model",
    "default_pooling",
    "describe_blocks",
    "detect_family",
    "find_block_names",
    "forward_logits",
    "hf_hub_cache_dir",
    "init_seed",
    "load_state_dict_file",
    "n_prefix_tokens",
    "normalize_state_dict",
    "resolve_hub_file",
    "state_dict_sha256",
]
