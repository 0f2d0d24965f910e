"""The ``hf`` source: Hugging Face ``transformers`` vision models, from the local HF cache.

``model_name`` is a hub repository id (``facebook/dinov2-small``, ``google/vit-base-patch16-224-
in21k``, ``openai/clip-vit-base-patch32``, ``google/siglip-base-patch16-224``) or a local folder
holding ``config.json`` + weights. ``config.json`` and the weights are looked up in the Hugging
Face cache first (offline: an error naming the cache and the files); the model is then built
with ``AutoModel.from_pretrained(folder, local_files_only=True)``. ``"config": "file.json"``
builds the architecture from a local config with seeded random weights instead (no hub at
all). Image-text models (CLIP, SigLIP, ALIGN-like, with a ``vision_model``) are reduced to
their vision tower. The eval transform comes from the repository's
``preprocessor_config.json`` (size, centre crop, mean/std, resample), or from ``transform``
(same keys as the python source), which is required when there is no processor config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sim_consistency.config.models import ModelSpec
from sim_consistency.errors import ConfigError
from sim_consistency.models.sources._base import BuiltModel, entry_where, load_strict
from sim_consistency.models.sources._hub import resolve_hub_file
from sim_consistency.models.sources._spec import SourceSpec, resolve_file, unknown_parameters
from sim_consistency.models.sources.python import TransformSpec

__all__ = ["HfSpec", "build_hf", "hf_onto", "processor_transform"]

_WEIGHTS = ["model.safetensors", "pytorch_model.bin"]
#: PIL resample codes of image processors -> torchvision interpolation names.
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


@dataclass(frozen=True)
class HfSpec(SourceSpec):
    """A transformers vision model.

    Attributes:
        model_name: hub repository id or local folder.
        revision: branch, tag or commit of the repository.
        pretrained: load the repository's weights (default); ``False``: seeded random weights.
        config: a local ``config.json`` to build from instead of the repository (random init).
        transform: eval preprocessing, overriding the processor config.
    """

    KEYS = frozenset({"model_name", "revision", "pretrained", "config", "transform"})
    REQUIRED = frozenset()

    model_name: str | None = None
    revision: str | None = None
    pretrained: bool = True
    config: Path | None = None
    transform: TransformSpec | None = None

    @property
    def label(self) -> str:
        return self.model_name or (self.config.stem if self.config else "hf")

    def without_weights(self) -> HfSpec:
        return replace(self, pretrained=False)

    @classmethod
    def parse(
        cls,
        entry: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        where: str,
        base_dir: Path,
        problems: list[str],
    ) -> HfSpec | None:
        n_before = len(problems)
        name, config = entry.get("model_name"), entry.get("config")
        if (name is None) == (config is None):
            problems.append(
                f"{where}: source 'hf' needs exactly one of 'model_name' (hub id or folder) and "
                f"'config' (a local config.json) (got model_name={name!r}, config={config!r})."
            )
        unknown_parameters(where, "hf", parameters, problems)
        config_path = None
        if config is not None:
            config_path = resolve_file(config, base_dir)
            if not config_path.is_file():
                problems.append(f"{where}: config file {config_path} does not exist.")
        pretrained = entry.get("pretrained", config is None)
        if not isinstance(pretrained, bool) or (pretrained and config is not None):
            problems.append(
                f"{where}: pretrained must be true/false, and false with 'config' "
                f"(got {pretrained!r})."
            )
        transform = None
        if "transform" in entry:
            transform = TransformSpec.parse(entry["transform"], where, problems)
        elif config is not None:
            problems.append(f"{where}: an 'hf' entry built from 'config' needs a 'transform'.")
        if len(problems) > n_before:
            return None
        return cls(
            model_name=name,
            revision=entry.get("revision"),
            pretrained=pretrained,
            config=config_path,
            transform=transform,
        )


def _local_folder(opts: HfSpec) -> Path | None:
    if opts.model_name is None:
        return None
    folder = Path(opts.model_name).expanduser()
    return folder if (folder / "config.json").is_file() else None


def _repo_file(opts: HfSpec, names: list[str], where: str) -> Path:
    folder = _local_folder(opts)
    if folder is not None:
        for name in names:
            if (folder / name).is_file():
                return folder / name
        raise ConfigError(f"{where}: folder {folder} has none of {', '.join(names)}.")
    assert opts.model_name is not None
    return resolve_hub_file(opts.model_name, names, revision=opts.revision, where=where)


def _config(opts: HfSpec, where: str) -> Any:
    from transformers import AutoConfig

    file = opts.config or _repo_file(opts, ["config.json"], where)
    raw = json.loads(Path(file).read_text())
    model_type = raw.pop("model_type", None)
    if model_type is None:
        raise ConfigError(f"{file}: has no 'model_type'; it is not a transformers config.")
    try:
        return AutoConfig.for_model(model_type, **raw)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{file}: transformers cannot read this config ({exc}).") from exc


def _vision_tower(model: nn.Module) -> nn.Module:
    """The vision tower of an image-text model (``vision_model``), else the model itself."""
    tower = getattr(model, "vision_model", None)
    return tower if isinstance(tower, nn.Module) and hasattr(model, "text_model") else model


def _skeleton(opts: HfSpec, where: str) -> nn.Module:
    from transformers import AutoModel

    return _vision_tower(AutoModel.from_config(_config(opts, where)))


def processor_transform(file: Path) -> TransformSpec:
    """The eval transform an image processor config describes (resize, crop, mean/std)."""
    raw = json.loads(file.read_text())
    size = raw.get("size", 224)
    crop = raw.get("crop_size")
    shortest = size.get("shortest_edge") if isinstance(size, dict) else None
    height = size.get("height") if isinstance(size, dict) else size
    do_crop = bool(raw.get("do_center_crop")) and crop is not None
    crop_h = (crop.get("height") if isinstance(crop, dict) else crop) if do_crop else None
    side = crop_h or height or shortest
    if side is None:
        raise ConfigError(
            f"{file}: the image processor config gives no input size ('size' needs "
            "'height' or 'shortest_edge', or give 'crop_size')."
        )
    resize_side = shortest or height
    return TransformSpec(
        input_size=int(side),
        mean=tuple(float(x) for x in raw.get("image_mean", (0.5, 0.5, 0.5))),
        std=tuple(float(x) for x in raw.get("image_std", (0.5, 0.5, 0.5))),
        resize=int(resize_side) if resize_side is not None and (do_crop or shortest) else None,
        interpolation=_RESAMPLE.get(int(raw.get("resample", 3)), "bicubic"),
        squash=shortest is None and not do_crop,
    )


def _transform(opts: HfSpec, where: str) -> tuple[Any, dict[str, Any]]:
    spec = opts.transform
    if spec is None:
        spec = processor_transform(_repo_file(opts, ["preprocessor_config.json"], where))
    transform, preprocessing = spec.build()
    return transform, {**preprocessing, "library": "transformers"}


def build_hf(
    spec: ModelSpec, specs: Mapping[str, ModelSpec], *, models_dir: Path | None = None
) -> BuiltModel:
    """Build an ``hf`` entry: the (vision) model, its weights from the HF cache, its transform.

    Raises:
        WeightsNotFoundError: config or weights are neither cached nor downloadable.
        ConfigError: not a transformers config; weights that do not fit.
    """
    opts: HfSpec = spec.options
    where = entry_where(spec)
    model = _skeleton(opts, where)
    if opts.pretrained:
        from sim_consistency.models.checkpoints import load_state_dict_file

        file = _repo_file(opts, _WEIGHTS, where)
        full = load_state_dict_file(file)
        prefix = "vision_model."
        if any(k.startswith(prefix) for k in full) and not any(
            k.startswith(prefix) for k in model.state_dict()
        ):
            full = {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)}
        load_strict(model, full, file=file, where=where, arch=spec, filter_fn=_drop_extra)
    transform, preprocessing = _transform(opts, where)
    return BuiltModel(model.eval(), transform, preprocessing, arch_id=spec.model_id)


def _drop_extra(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Keep the keys the model has (a base-model checkpoint may carry a pooler or a head)."""
    keys = set(model.state_dict())
    return {k: v for k, v in state_dict.items() if k in keys}


def hf_onto(
    arch: ModelSpec,
    state_dict: dict[str, torch.Tensor],
    *,
    file: Path,
    where: str,
    num_classes: int | None = None,
    img_size: int | None = None,
) -> BuiltModel:
    """Load a checkpoint / variant state dict strictly onto an hf architecture."""
    opts: HfSpec = arch.options
    model = _skeleton(opts, where)
    load_strict(model, state_dict, file=file, where=where, arch=arch, filter_fn=None)
    transform, preprocessing = _transform(opts, where)
    return BuiltModel(model.eval(), transform, preprocessing, arch_id=arch.model_id)
