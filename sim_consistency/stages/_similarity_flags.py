"""The similarity stages' own flag groups: the metrics, and the cached block compared (private).

:class:`SimilarityMetrics` (``--similarity_config``, ``--biased_cka``) is shared by
``distance_matrix_computation``, ``consistency`` and ``analyses``; :class:`CachedBlock`
(``--split``, ``--block``, ``--normalize``) by ``distance_matrix_computation`` and ``analyses``
(its ``sample_size`` analysis recomputes CKA from the caches as the matrices were computed).
They are field groups like those of :mod:`sim_consistency.runtime.groups`, kept here because
only this stage family uses them: ``--help`` lists them under the stage's own options.

Cheap to import (the stages' ``--help`` path).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from sim_consistency.runtime import option
from sim_consistency.runtime.groups import StageSettings

if TYPE_CHECKING:
    from sim_consistency.config.similarity import MetricSpec

__all__ = ["DEFAULT_SPLIT", "CachedBlock", "SimilarityMetrics"]

#: The split compared when ``--split`` is not given (and no ``--profile`` sets it).
DEFAULT_SPLIT = "test"


@dataclass(frozen=True, kw_only=True)
class SimilarityMetrics(StageSettings):
    """``--similarity_config`` and ``--biased_cka``: the metrics; :meth:`validated` loads them."""

    similarity_config: Path = option(
        "configs/similarity/<name>.json, or the name of a shipped config (e.g. default): the "
        "similarity metrics",
        default=None,
        required=True,
    )
    biased_cka: bool = option(
        "CKA entries without 'unbiased' use the biased estimator (default: unbiased, as in "
        "Rep2Rep)",
        default=False,
    )
    #: The metrics of ``--similarity_config`` (filled in by :meth:`validated`; settings built
    #: in code may give them directly, without a config).
    metrics: tuple[MetricSpec, ...] = ()

    def validated(self):
        from sim_consistency.config.similarity import load_similarity_config

        s = super().validated()
        if s.similarity_config is None:
            return s
        return replace(
            s, metrics=tuple(load_similarity_config(s.similarity_config, biased_cka=s.biased_cka))
        )


@dataclass(frozen=True, kw_only=True)
class CachedBlock(StageSettings):
    """``--split``, ``--block``, ``--normalize``: which cached features are compared, and how.

    ``split`` stays ``None`` until the stage fills it (:data:`DEFAULT_SPLIT`, or its profile's).
    """

    split: str = option(
        "dataset split of the feature caches",
        default=None,
        shown_default=f"{DEFAULT_SPLIT} (ours); train with --profile rep2rep where the stage has it",
    )
    block: str | None = option(
        "block compared for every model",
        default=None,
        shown_default="rep2rep for entries with module_name, else its last block",
    )
    normalize: bool = option(
        "L2-normalise each sample's features first (as Rep2Rep)",
        default=True,
        negatable=True,
    )
