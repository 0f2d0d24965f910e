"""The ``open_clip`` source: ``open_clip.create_model_and_transforms``, visual tower analysed.

The visual tower is wrapped in :class:`~sim_consistency.models.classifier.ImageClassifier`
(no head); the eval transform is open_clip's val preprocess of the tag.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from sim_consistency.config.models import ModelSpec
from sim_consistency.errors import ConfigError
from sim_consistency.jsonable import jsonable
from sim_consistency.models.classifier import ImageClassifier
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

__all__ = ["OpenClipSpec", "build_open_clip", "open_clip_onto", "open_clip_transform"]


@dataclass(frozen=True)
class OpenClipSpec(NamedModelSpec):
    """A ``source: "open_clip"`` entry: ``model_name``, ``pretrained`` tag, ``weights``."""

    SOURCE: ClassVar[str] = "open_clip"


def _visual_tower(clip_model: nn.Module) -> nn.Module:
    """The vision tower (``.visual``) of an open_clip model."""
    visual = clip_model.visual
    if not isinstance(visual, nn.Module):
        raise TypeError(f"open_clip model {type(clip_model).__name__} has no visual tower.")
    return visual


def open_clip_transform(visual: nn.Module) -> tuple[Callable, dict[str, Any]]:
    from open_clip.transform import PreprocessCfg, image_transform_v2

    raw_cfg = getattr(visual, "preprocess_cfg", None)
    if not isinstance(raw_cfg, Mapping):
        raise TypeError(f"open_clip tower {type(visual).__name__} has no preprocess_cfg.")
    cfg = dict(raw_cfg)
    transform = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    size = cfg["size"]
    size = [size, size] if isinstance(size, int) else list(size)
    preprocessing = {
        "library": "open_clip",
        "input_size": [3, *size],
        "mean": jsonable(cfg["mean"]),
        "std": jsonable(cfg["std"]),
        "interpolation": cfg["interpolation"],
        "resize_mode": cfg["resize_mode"],
        "fill_color": cfg.get("fill_color"),
        **transform_steps(transform),
    }
    return transform, preprocessing


def _open_clip_tag_cfg(spec: ModelSpec) -> dict[str, Any]:
    """The open_clip pretrained config of ``spec``'s tag ({} without a tag)."""
    import open_clip

    name = spec.model_name or ""
    if name.startswith(("hf-hub:", "local-dir:")):
        return {}
    if name.replace("/", "-") not in open_clip.list_models():
        close = difflib.get_close_matches(name, open_clip.list_models(), n=3)
        raise ConfigError(
            f"{_where(spec)}: open_clip has no model {name!r}"
            + (f"; did you mean {', '.join(close)}?" if close else ".")
            + " See open_clip.list_models()."
        )
    if not isinstance(spec.pretrained, str):
        if spec.pretrained and spec.weights is None:
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise ConfigError(
                f"{_where(spec)}: open_clip needs a pretrained tag (got pretrained: true). "
                f'Valid for {name}: {", ".join(tags) or "none"}; or give a "weights" file.'
            )
        return {}
    cfg = open_clip.get_pretrained_cfg(name, spec.pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ConfigError(
            f"{_where(spec)}: open_clip has no pretrained tag {spec.pretrained!r} for {name}. "
            f"Valid: {', '.join(tags) or 'none'}."
        )
    return cfg


def _open_clip_create(
    spec: ModelSpec, tag_cfg: Mapping[str, Any], pretrained: str | None, img_size: int | None
) -> nn.Module:
    """``create_model_and_transforms`` with the tag's preprocessing and activation settings."""
    import open_clip

    kwargs: dict[str, Any] = {
        key: tag_cfg[src]
        for key, src in (
            ("image_mean", "mean"),
            ("image_std", "std"),
            ("image_interpolation", "interpolation"),
            ("image_resize_mode", "resize_mode"),
        )
        if tag_cfg.get(src) is not None
    }
    if tag_cfg.get("quick_gelu"):
        kwargs["force_quick_gelu"] = True
    if img_size is not None:
        kwargs["force_image_size"] = img_size
    if torch.get_default_device().type == "meta":
        kwargs["device"] = "meta"  # a weightless skeleton (--list_blocks): do not move to CPU
    try:
        model, _, _ = open_clip.create_model_and_transforms(
            spec.model_name, pretrained=pretrained, pretrained_text=False, **kwargs
        )
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ConfigError(
            f"{_where(spec)}: open_clip could not build {spec.model_name!r} with weights "
            f"{pretrained or 'none'} ({str(exc).splitlines()[0][:500]})."
        ) from exc
    return model


def _open_clip_weights(spec: ModelSpec, tag_cfg: Mapping[str, Any]) -> str | None:
    """Local weights of an open_clip entry (file path or ``local-dir:`` model name)."""
    where = _where(spec)
    if spec.weights is not None:
        return str(spec.weights)
    if not tag_cfg:
        return None
    if tag_cfg.get("hf_hub"):
        repo_id, filename = _split_open_clip_hub(tag_cfg["hf_hub"])
        return str(resolve_hub_file(repo_id, safe_alternatives(filename), where=where))
    if tag_cfg.get("url"):
        cache = Path(os.path.expanduser("~/.cache/clip"))
        found = url_file(tag_cfg["url"], cache, where=where)
        return None if found is None else str(found)
    raise ConfigError(f"{where}: open_clip's tag {spec.pretrained!r} names no weights.")


def _split_open_clip_hub(hf_hub: str) -> tuple[str, str]:
    """``org/repo/`` -> (``org/repo``, default file); ``org/repo/file`` -> (``org/repo``, file)."""
    repo_id, filename = os.path.split(hf_hub)
    return repo_id, filename or "open_clip_pytorch_model.bin"


def build_open_clip(
    spec: ModelSpec, specs: Mapping[str, ModelSpec], *, models_dir: Path | None = None
) -> BuiltModel:
    """Build an ``open_clip`` entry: its visual tower, wrapped in a headless ImageClassifier.

    ``pretrained`` is a tag (``openai``, ``laion2b_s34b_b79k``, …) whose file comes from the
    Hugging Face cache or the hub; ``weights`` is a local full-CLIP checkpoint instead (with a
    tag, the tag still sets preprocessing and QuickGELU). ``hf-hub:org/repo`` names are resolved
    through the cache as well. The eval transform is open_clip's val preprocess.

    Raises:
        ConfigError: unknown model or tag; weights that do not fit.
        WeightsNotFoundError: pretrained weights are neither cached nor downloadable.
    """
    tag_cfg = _open_clip_tag_cfg(spec)
    name = spec.model_name or ""
    if name.startswith("hf-hub:") and spec.weights is not None:
        raise ConfigError(
            f"{_where(spec)}: an 'hf-hub:' model reads its weights from its hub repository "
            f"(got weights {spec.weights}). Use the built-in open_clip model name (with its tag "
            "for preprocessing) together with the weights file."
        )
    if name.startswith("hf-hub:"):
        repo_id = name[len("hf-hub:") :]
        config = resolve_hub_file(repo_id, ["open_clip_config.json"], where=_where(spec))
        resolve_hub_file(
            repo_id,
            ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"],
            where=_where(spec),
        )
        spec = _with_model_name(spec, f"local-dir:{config.parent}")
        pretrained = None
    else:
        pretrained = _open_clip_weights(spec, tag_cfg)
        if pretrained is None and isinstance(spec.pretrained, str):
            pretrained = spec.pretrained  # URL tag, host reachable: open_clip downloads it
    visual = _visual_tower(_open_clip_create(spec, tag_cfg, pretrained, spec.img_size))
    model = ImageClassifier(visual).eval()
    transform, preprocessing = open_clip_transform(visual)
    return BuiltModel(model, transform, preprocessing, arch_id=spec.model_id)


def _with_model_name(spec: ModelSpec, model_name: str) -> ModelSpec:
    return replace(spec, model_name=model_name, pretrained=False)


def open_clip_onto(
    arch: ModelSpec,
    state_dict: dict[str, torch.Tensor],
    *,
    file: Path,
    where: str,
    num_classes: int | None = None,
    img_size: int | None,
) -> BuiltModel:
    """Load a full-CLIP, vision-tower or model-soups state dict onto ``arch``'s tower.

    ``num_classes`` is not used: a head comes from the checkpoint's ``classification_head``.
    """
    from open_clip.model import resize_pos_embed

    tag_cfg = _open_clip_tag_cfg(arch)
    clip_model = _open_clip_create(arch, tag_cfg, None, img_size)
    clip_keys = set(clip_model.state_dict())
    head_prefix = "classification_head."
    if any(k.startswith("visual.") for k in state_dict):
        # A full CLIP or model-soups state dict: keep the vision tower and head; text-tower
        # keys of this architecture are dropped, anything else is reported as unexpected.
        state_dict = {
            k: v
            for k, v in state_dict.items()
            if k.startswith(("visual.", head_prefix)) or k not in clip_keys
        }
    else:  # a bare vision-tower state dict
        state_dict = {
            (k if k.startswith(head_prefix) else f"visual.{k}"): v for k, v in state_dict.items()
        }
    head = None
    weight = state_dict.get(f"{head_prefix}weight")
    if weight is not None:
        if weight.ndim != 2:
            raise ConfigError(
                f"{file}: classification_head.weight must be 2-d (got shape {tuple(weight.shape)})."
            )
        out_dim = getattr(clip_model.visual, "output_dim", weight.shape[1])
        if weight.shape[1] != out_dim:
            raise ConfigError(
                f"{file}: classification_head takes {weight.shape[1]}-d features but the "
                f"visual tower of '{arch.model_id}' outputs {out_dim}-d embeddings (got weight "
                f"shape {tuple(weight.shape)}). Check 'arch'."
            )
        head = nn.Linear(weight.shape[1], weight.shape[0], bias=f"{head_prefix}bias" in state_dict)
    visual = _visual_tower(clip_model)
    model = ImageClassifier(visual, head, normalize=True)

    def resize_positions(sd: dict[str, torch.Tensor], m: nn.Module) -> dict[str, torch.Tensor]:
        resize_pos_embed(sd, m)
        return sd

    load_strict(model, state_dict, file=file, where=where, arch=arch, filter_fn=resize_positions)
    model.eval()
    transform, preprocessing = open_clip_transform(visual)
    return BuiltModel(model, transform, preprocessing, arch_id=arch.model_id)
