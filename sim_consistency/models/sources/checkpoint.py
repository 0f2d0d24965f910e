"""The ``checkpoint`` and ``variant`` sources: a state dict onto another entry's architecture.

A checkpoint follows its ``arch``, a variant its first ingredient / ``base``, to the entry that
defines the architecture; that entry's source builds the network without any download and the
file is loaded strictly onto it (:data:`ARCHITECTURE_LOADERS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

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
from sim_consistency.models.sources._spec import SourceSpec, resolve_file, unknown_parameters

__all__ = ["CheckpointSpec", "build_checkpoint", "build_variant"]


@dataclass(frozen=True)
class CheckpointSpec(SourceSpec):
    """A ``source: "checkpoint"`` entry: a state-dict ``path`` on the ``arch`` entry's network.

    Attributes:
        arch: id of the entry that defines the architecture (checked against the config later).
        path: the state-dict file (absolute).
        rep2rep_dialect: the entry has ``model_parameters`` (recorded as ``pretrained``, as
            before the spec classes, so content keys are unchanged).
    """

    KEYS: ClassVar[frozenset[str]] = frozenset({"arch", "path"})
    REQUIRED: ClassVar[frozenset[str]] = frozenset({"arch", "path"})

    arch: str = ""
    path: Path = Path()
    rep2rep_dialect: bool = False

    @classmethod
    def parse(
        cls,
        entry: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        where: str,
        base_dir: Path,
        problems: list[str],
    ) -> CheckpointSpec | None:
        n_before = len(problems)
        unknown_parameters(where, "checkpoint", parameters, problems)
        path = resolve_file(entry["path"], base_dir)
        if not path.is_file():
            problems.append(f"{where}: checkpoint file {path} does not exist.")
        arch = entry["arch"]
        if not isinstance(arch, str):
            problems.append(f"{where}: arch must be the id of another entry (got {arch!r}).")
        if len(problems) > n_before:
            return None
        return cls(arch=arch, path=path, rep2rep_dialect="model_parameters" in entry)

    @property
    def label(self) -> str:
        return self.arch

    def without_weights(self) -> CheckpointSpec:
        return self

    def model_fields(self) -> dict[str, Any]:
        """``arch`` and ``path`` live on ``ModelSpec`` itself, where the builders read them."""
        return {"arch": self.arch, "path": self.path, "pretrained": self.rep2rep_dialect}


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
