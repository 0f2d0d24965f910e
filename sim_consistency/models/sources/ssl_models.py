"""The ``ssl`` source: Rep2Rep's (thingsvision's) self-supervised models by name.

The name table and key mappings live in :mod:`.rep2rep` (:data:`~.rep2rep.SSL_MODELS`); this
module builds them: timm-hosted weights through the ``timm`` source (Hugging Face cache first),
release files from the torch hub cache (or a local ``weights`` file) loaded strictly after their
key mapping. The eval transform is thingsvision's (resize 256, crop 224, ImageNet statistics).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sim_consistency.config.models import ModelSpec
from sim_consistency.errors import ConfigError
from sim_consistency.models.checkpoints import load_state_dict_file
from sim_consistency.models.sources._base import BuiltModel, entry_where, load_strict
from sim_consistency.models.sources._hub import download_url
from sim_consistency.models.sources._spec import (
    SourceSpec,
    check_choice,
    parse_weights_file,
    unknown_parameters,
)
from sim_consistency.models.sources.python import TransformSpec
from sim_consistency.models.sources.rep2rep import SSL_MODELS, THINGSVISION_TRANSFORM, SslModel
from sim_consistency.models.sources.timm import build_timm, timm_filter_fn

__all__ = ["SslSpec", "build_ssl", "ssl_checkpoint_files", "ssl_onto", "ssl_state_dict"]


@dataclass(frozen=True)
class SslSpec(SourceSpec):
    """A thingsvision ssl model.

    Attributes:
        model_name: a :data:`~.rep2rep.SSL_MODELS` name.
        pretrained: load the published weights (default); ``False`` keeps a random init.
        weights: a local checkpoint (in the release's layout) used instead of the cache.
    """

    KEYS = frozenset({"model_name", "pretrained", "weights"})
    REQUIRED = frozenset({"model_name"})

    model_name: str
    pretrained: bool = True
    weights: Path | None = None

    @property
    def label(self) -> str:
        return self.model_name

    def without_weights(self) -> SslSpec:
        return replace(self, pretrained=False, weights=None)

    @classmethod
    def parse(
        cls,
        entry: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        where: str,
        base_dir: Path,
        problems: list[str],
    ) -> SslSpec | None:
        n_before = len(problems)
        name = entry["model_name"]
        check_choice(where, "ssl model_name", name, sorted(SSL_MODELS), problems)
        unknown_parameters(where, "ssl", parameters, problems)
        pretrained = entry.get("pretrained", True)
        if not isinstance(pretrained, bool):
            problems.append(f"{where}: pretrained must be true/false (got {pretrained!r}).")
        weights = parse_weights_file(entry, base_dir, where, problems)
        if len(problems) > n_before:
            return None
        return cls(model_name=name, pretrained=pretrained, weights=weights)


def ssl_checkpoint_files(name: str, info: SslModel) -> list[Path]:
    """Where a release checkpoint is looked for, in order (thingsvision's VISSL copy first)."""
    torch_home = Path(torch.hub.get_dir()).parent
    files = []
    if info.layout == "vissl":
        files.append(torch_home / "vissl" / f"{name}.torch")
    assert info.url is not None
    files.append(Path(torch.hub.get_dir()) / "checkpoints" / f"{name}-{os.path.basename(info.url)}")
    return files


def ssl_state_dict(raw: Any, info: SslModel, *, where: str) -> dict[str, torch.Tensor]:
    """Map a release checkpoint's keys onto the architecture (``info.layout``).

    VISSL: the trunk under ``classy_state_dict.base_model.model.trunk`` (or
    ``model_state_dict``) with ``_feature_blocks.`` removed; torchvision layouts: ``fc.*``
    dropped (thingsvision replaces ``fc`` by ``Identity``).
    """
    from sim_consistency.models.checkpoints import normalize_state_dict

    if info.layout == "vissl" and isinstance(raw, Mapping):
        if "classy_state_dict" in raw:
            raw = raw["classy_state_dict"]["base_model"]["model"]["trunk"]
        elif "model_state_dict" in raw:
            raw = raw["model_state_dict"]
        prefix = "_feature_blocks."
        raw = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in raw.items()}
    state_dict = normalize_state_dict(raw, where=where)
    if info.library == "torchvision":
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    return state_dict


def _read(file: Path, info: SslModel, where: str) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors" or info.layout != "vissl":
        return ssl_state_dict(load_state_dict_file(file), info, where=f"{file}")
    try:
        raw = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"{file}: cannot read this VISSL checkpoint for {where} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300]})."
        ) from exc
    return ssl_state_dict(raw, info, where=str(file))


def _skeleton(info: SslModel) -> nn.Module:
    if info.library == "torchvision":
        import torchvision

        model = torchvision.models.resnet50()
        model.fc = nn.Identity()
        return model
    import timm

    kwargs: dict[str, Any] = {"num_classes": 0}
    if info.img_size is not None:
        kwargs["img_size"] = info.img_size
    return timm.create_model(info.arch, pretrained=False, **kwargs)


def _transform() -> tuple[Any, dict[str, Any]]:
    transform, preprocessing = TransformSpec(
        input_size=THINGSVISION_TRANSFORM["input_size"],
        mean=tuple(THINGSVISION_TRANSFORM["mean"]),
        std=tuple(THINGSVISION_TRANSFORM["std"]),
        resize=THINGSVISION_TRANSFORM["resize"],
        interpolation=THINGSVISION_TRANSFORM["interpolation"],
    ).build()
    return transform, {**preprocessing, "library": "thingsvision"}


def _load(model: nn.Module, state_dict, info: SslModel, *, file: Path, where: str, arch) -> None:
    filter_fn = timm_filter_fn(model) if info.layout == "timm_filter" else None
    load_strict(model, state_dict, file=file, where=where, arch=arch, filter_fn=filter_fn)


def build_ssl(
    spec: ModelSpec, specs: Mapping[str, ModelSpec], *, models_dir: Path | None = None
) -> BuiltModel:
    """Build an ``ssl`` entry: its architecture, its published weights, thingsvision's transform.

    Raises:
        WeightsNotFoundError: the weights are neither cached nor downloadable.
        ConfigError: a checkpoint that does not fit after the key mapping.
    """
    opts: SslSpec = spec.options
    info = SSL_MODELS[opts.model_name]
    where = entry_where(spec)
    if info.layout == "timm" and opts.weights is None:
        as_timm = ModelSpec(
            model_id=spec.model_id,
            source="timm",
            model_name=info.arch,
            pretrained=opts.pretrained,
            num_classes=0,
            img_size=info.img_size,
        )
        model = build_timm(as_timm, specs).model
    else:
        model = _skeleton(info)
        file = opts.weights
        if file is None and opts.pretrained:
            looked = ssl_checkpoint_files(opts.model_name, info)
            found = [f for f in looked if f.is_file()]
            assert info.url is not None
            file = (
                found[0]
                if found
                else download_url(info.url, looked[-1], where=where, looked=looked)
            )
        if file is not None:
            _load(model, _read(file, info, where), info, file=file, where=where, arch=spec)
    transform, preprocessing = _transform()
    return BuiltModel(model.eval(), transform, preprocessing, arch_id=spec.model_id)


def ssl_onto(
    arch: ModelSpec,
    state_dict: dict[str, torch.Tensor],
    *,
    file: Path,
    where: str,
    num_classes: int | None = None,
    img_size: int | None = None,
) -> BuiltModel:
    """Load a checkpoint / variant state dict (our layout) strictly onto an ssl architecture."""
    info = SSL_MODELS[arch.options.model_name]
    model = _skeleton(info)
    load_strict(model, state_dict, file=file, where=where, arch=arch, filter_fn=None)
    transform, preprocessing = _transform()
    return BuiltModel(model.eval(), transform, preprocessing, arch_id=arch.model_id)
