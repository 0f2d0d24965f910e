"""The ``timm`` source: ``timm.create_model`` with pretrained or local weights, the timm way.

Pretrained weights (or a local ``weights`` file) go through
``pretrained_cfg_overlay=dict(file=...)``, so the family's ``checkpoint_filter_fn`` and
classifier adaptation apply; the eval transform is timm's ``resolve_model_data_config``.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from sim_consistency.config.models import ModelSpec
from sim_consistency.errors import ConfigError
from sim_consistency.jsonable import jsonable
from sim_consistency.models.sources._base import (
    BuiltModel,
    load_strict,
    transform_steps,
)
from sim_consistency.models.sources._base import (
    entry_where as _where,
)
from sim_consistency.models.sources._hub import resolve_hub_file, safe_alternatives, url_file
from sim_consistency.models.sources._spec import NamedModelSpec

__all__ = ["TimmSpec", "build_timm", "timm_filter_fn", "timm_onto", "timm_transform"]


@dataclass(frozen=True)
class TimmSpec(NamedModelSpec):
    """A ``source: "timm"`` entry: ``model_name`` (``arch.tag`` allowed), ``pretrained``,
    ``weights``."""

    SOURCE: ClassVar[str] = "timm"


def timm_transform(model: nn.Module, img_size: int | None) -> tuple[Callable, dict[str, Any]]:
    from timm.data import create_transform, resolve_model_data_config

    config = resolve_model_data_config(model)
    if img_size is not None:
        config["input_size"] = (config["input_size"][0], img_size, img_size)
    transform = create_transform(**config, is_training=False)
    preprocessing = {
        "library": "timm",
        "input_size": jsonable(config["input_size"]),
        "mean": jsonable(config["mean"]),
        "std": jsonable(config["std"]),
        "interpolation": config["interpolation"],
        "crop_pct": config.get("crop_pct"),
        "crop_mode": config.get("crop_mode"),
        **transform_steps(transform),
    }
    return transform, preprocessing


def _timm_name(spec: ModelSpec) -> str:
    name = spec.model_name or ""
    if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")):
        raise ConfigError(
            f"{_where(spec)}: timm model names with a schema are not supported (got "
            f"{name!r}). Use the architecture name with its tag (e.g. "
            "'vit_base_patch16_224.augreg_in21k') or a local \"weights\" file."
        )
    if isinstance(spec.pretrained, str):
        if "." in name:
            raise ConfigError(
                f"{_where(spec)}: model_name {name!r} already has a pretrained tag, and "
                f"pretrained names another ({spec.pretrained!r}). Keep one of them."
            )
        name = f"{name}.{spec.pretrained}"
    return name


def _timm_pretrained_cfg(name: str, where: str) -> Any:
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        arch = name.split(".")[0]
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        raise ConfigError(
            f"{where}: timm has no model {arch!r}"
            + (f"; did you mean {', '.join(close)}?" if close else ".")
            + " See timm.list_models()."
        )
    try:
        return get_pretrained_cfg(name)
    except RuntimeError as exc:
        arch = name.split(".")[0]
        tags = timm.list_pretrained(f"{arch}.*")
        raise ConfigError(
            f"{where}: timm has no pretrained tag {name!r} ({exc}). Valid: "
            f"{', '.join(tags) or 'none (use pretrained: false or a weights file)'}."
        ) from exc


def _timm_kwargs(num_classes: int | None, img_size: int | None, cfg: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if img_size is not None and cfg is not None and getattr(cfg, "fixed_input_size", False):
        kwargs["img_size"] = img_size  # position embeddings are sized for the input
    return kwargs


def _timm_hub_weights(cfg: Any, where: str) -> Path | None:
    """Local weights of a timm pretrained config, or ``None`` when timm may download by URL."""
    if cfg is None:
        raise ConfigError(
            f"{where}: timm has no pretrained weights for this model. "
            'Use pretrained: false or a local "weights" file.'
        )
    if cfg.hf_hub_id:
        repo_id, _, revision = cfg.hf_hub_id.partition("@")
        filenames = (
            safe_alternatives(cfg.hf_hub_filename)
            if cfg.hf_hub_filename
            else ["model.safetensors", "pytorch_model.bin"]
        )
        return resolve_hub_file(repo_id, filenames, revision=revision or None, where=where)
    if cfg.url:
        return url_file(cfg.url, Path(torch.hub.get_dir()) / "checkpoints", where=where)
    raise ConfigError(
        f"{where}: timm's pretrained config of {cfg.architecture} names no weights "
        '(no hf_hub_id, no url). Use a local "weights" file.'
    )


def build_timm(
    spec: ModelSpec, specs: Mapping[str, ModelSpec], *, models_dir: Path | None = None
) -> BuiltModel:
    """Build a ``timm`` entry: architecture, pretrained or local weights, eval transform.

    ``pretrained`` true (or a tag) loads the hub weights from the Hugging Face cache, or
    downloads them when the hub is reachable; ``weights`` loads a local file instead. Both go
    through ``timm.create_model(pretrained=True, pretrained_cfg_overlay=dict(file=...))``, so
    the family's checkpoint filter and, when ``num_classes`` differs from the pretrained head,
    timm's head re-initialisation apply.

    Raises:
        ConfigError: unknown model or tag; weights that do not fit the architecture.
        WeightsNotFoundError: pretrained weights are neither cached nor downloadable.
    """
    import timm

    where = _where(spec)
    name = _timm_name(spec)
    cfg = _timm_pretrained_cfg(name, where)
    kwargs = _timm_kwargs(spec.num_classes, spec.img_size, cfg)
    weights: Path | None = None
    if spec.weights is not None:
        weights = spec.weights
    elif spec.pretrained:
        weights = _timm_hub_weights(cfg, where)
    try:
        if weights is not None:
            model = timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay={"file": str(weights)}, **kwargs
            )
        else:  # no weights, or a URL download timm does itself (the host answered)
            model = timm.create_model(name, pretrained=bool(spec.pretrained), **kwargs)
    except (RuntimeError, KeyError, ValueError) as exc:
        source = weights or "timm's pretrained weights"
        raise ConfigError(
            f"{where}: could not load {source} into timm model {name!r} "
            f"({str(exc).splitlines()[0][:500]}). Check model_name, num_classes and the file."
        ) from exc
    model.eval()
    transform, preprocessing = timm_transform(model, spec.img_size)
    return BuiltModel(model, transform, preprocessing, arch_id=spec.model_id)


def _timm_head_size(cfg: Any, state_dict: Mapping[str, torch.Tensor]) -> int | None:
    """Classifier rows in the checkpoint: 0 if it has no classifier, None if unclear."""
    classifiers = getattr(cfg, "classifier", None) if cfg is not None else None
    if not classifiers:
        return None
    if isinstance(classifiers, str):
        classifiers = (classifiers,)
    for name in classifiers:
        weight = state_dict.get(f"{name}.weight")
        if weight is not None:
            return int(weight.shape[0])
    if any(k.startswith(f"{name}.") for name in classifiers for k in state_dict):
        return None
    return 0


def timm_filter_fn(model: nn.Module) -> Callable | None:
    module = sys.modules.get(type(model).__module__)
    return getattr(module, "checkpoint_filter_fn", None)


def timm_onto(
    arch: ModelSpec,
    state_dict: dict[str, torch.Tensor],
    *,
    file: Path,
    where: str,
    num_classes: int | None,
    img_size: int | None,
) -> BuiltModel:
    import timm

    if any(k.startswith("classification_head.") for k in state_dict):
        raise ConfigError(
            f"{file}: a model-soups style checkpoint (visual tower + classification_head) "
            f"cannot be loaded onto timm entry '{arch.model_id}' for {where}. Set 'arch' to an "
            "open_clip entry with the same vision tower."
        )
    name = _timm_name(arch)
    cfg = _timm_pretrained_cfg(name, where)
    in_file = _timm_head_size(cfg, state_dict)
    if num_classes is not None and in_file is not None and num_classes != in_file:
        raise ConfigError(
            f"{where}: num_classes is {num_classes} but the classifier in {file} has "
            f"{in_file} rows. Remove num_classes (it is read from the checkpoint) or fix it."
        )
    head = num_classes if num_classes is not None else in_file
    model = timm.create_model(name, pretrained=False, **_timm_kwargs(head, img_size, cfg))
    load_strict(
        model, state_dict, file=file, where=where, arch=arch, filter_fn=timm_filter_fn(model)
    )
    model.eval()
    transform, preprocessing = timm_transform(model, img_size)
    return BuiltModel(model, transform, preprocessing, arch_id=arch.model_id)
