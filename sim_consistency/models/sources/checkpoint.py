"""The ``checkpoint`` and ``variant`` sources: a state dict onto another entry's architecture.

A checkpoint follows its ``arch``, a variant its first ingredient / ``base``, to the entry that
defines the architecture; that entry's source builds the network without any download and the
file is loaded strictly onto it (:data:`ARCHITECTURE_LOADERS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sim_consistency.config.models import ModelSpec
from sim_consistency.errors import ConfigError, MissingInputError
from sim_consistency.models.checkpoints import load_state_dict_file
from sim_consistency.models.sources._base import (
    BuiltModel,
    architecture_spec,
    inherited_option,
)
from sim_consistency.models.sources._base import (
    entry_where as _where,
)

__all__ = ["build_checkpoint", "build_variant"]


def _build_from_state_dict(
    spec: ModelSpec, specs: Mapping[str, ModelSpec], file: Path
) -> BuiltModel:
    arch = architecture_spec(spec, specs)
    state_dict = load_state_dict_file(file)
    img_size = inherited_option(spec, specs, "img_size")
    where = _where(spec)
    from sim_consistency.models.sources import ARCHITECTURE_LOADERS  # the registry owns them

    loader = ARCHITECTURE_LOADERS.get(arch.source)
    if loader is None:
        raise ConfigError(
            f"{where}: architecture entry '{arch.model_id}' has source {arch.source!r}, which "
            f"cannot take a state dict. Valid: {', '.join(ARCHITECTURE_LOADERS)}."
        )
    return loader(
        arch, state_dict, file=file, where=where, num_classes=spec.num_classes, img_size=img_size
    )


def build_checkpoint(
    spec: ModelSpec, specs: Mapping[str, ModelSpec], *, models_dir: Path | None = None
) -> BuiltModel:
    """Build a ``checkpoint`` entry: its ``arch``'s architecture (no download) + its file.

    The file is read with :func:`~sim_consistency.models.checkpoints.load_state_dict_file` and
    loaded strictly: every key and shape must match (timm's family filter may translate foreign
    layouts first). For timm, the head size is read from the checkpoint's classifier (0 when it
    has none). Checkpoints with ``classification_head.*`` (model-soups) on an open_clip
    architecture become ``ImageClassifier(visual, head, normalize=True)``, so logits are
    ``head(visual(x) / ||visual(x)||)``, as in model-soups.

    Raises:
        MissingInputError: the file does not exist.
        ConfigError: the file is unreadable or does not fit the architecture.
    """
    if spec.path is None:
        raise ConfigError(f"{_where(spec)}: a checkpoint entry needs 'path'.")
    return _build_from_state_dict(spec, specs, spec.path)


def build_variant(
    spec: ModelSpec, specs: Mapping[str, ModelSpec], *, models_dir: Path | None = None
) -> BuiltModel:
    """Build a ``variant`` entry from its materialised ``<models_dir>/<id>.safetensors``.

    The weights are loaded like a checkpoint onto the architecture of the entry the variant's
    first reference (first ingredient, or ``base``) resolves to.

    Raises:
        MissingInputError: the variant has not been built yet.
    """
    if models_dir is None:
        raise ConfigError(
            f"{_where(spec)}: a variant needs the project's models folder "
            "(pass location=ProjectLocation(...))."
        )
    file = Path(models_dir) / f"{spec.model_id}.safetensors"
    if not file.is_file():
        method = spec.variant.method if spec.variant is not None else "variant"
        raise MissingInputError(
            f"{file}: variant '{spec.model_id}' ({method}) is not materialised yet. Build it "
            "first: python scripts/build_variants.py --models_config <config> --model_key "
            f"{spec.model_id}."
        )
    return _build_from_state_dict(spec, specs, file)
