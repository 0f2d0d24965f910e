"""The ``torchvision`` source: ``torchvision.models.get_model(name, weights=…)``.

``pretrained`` (or Rep2Rep's ``model_parameters.weights``) names a weights enum member —
``"DEFAULT"`` or e.g. ``"IMAGENET1K_V2"`` — whose file is looked up in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``) first; offline, the error says where it looked. A local
``weights`` file is loaded strictly instead. The eval transform is the weights' own
``ImageClassification`` preset (crop, resize, mean, std, interpolation); an entry without
weights uses the architecture's ``DEFAULT`` preset. Classification models output logits over
the weights' categories (``num_classes`` for random or local weights).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sim_consistency.config.models import ModelSpec
from sim_consistency.errors import ConfigError
from sim_consistency.models.checkpoints import load_state_dict_file
from sim_consistency.models.sources._base import BuiltModel, entry_where, load_strict
from sim_consistency.models.sources._hub import url_file
from sim_consistency.models.sources._spec import (
    SourceSpec,
    check_choice,
    parse_weights_file,
    unknown_parameters,
)

__all__ = ["TorchvisionSpec", "build_torchvision", "torchvision_onto", "torchvision_transform"]


def _classification_models() -> list[str]:
    import torchvision.models

    return list(torchvision.models.list_models(module=torchvision.models))


@dataclass(frozen=True)
class TorchvisionSpec(SourceSpec):
    """A torchvision classification model.

    Attributes:
        model_name: ``torchvision.models.list_models(module=torchvision.models)`` name.
        weights_name: weights enum member (``DEFAULT``, ``IMAGENET1K_V1``, …) or ``None``.
        weights_file: a local state dict loaded instead of any download.
    """

    KEYS = frozenset({"model_name", "pretrained", "weights"})
    REQUIRED = frozenset({"model_name"})

    model_name: str
    weights_name: str | None = None
    weights_file: Path | None = None

    @property
    def label(self) -> str:
        return self.model_name

    def without_weights(self) -> TorchvisionSpec:
        return replace(self, weights_name=None, weights_file=None)

    @classmethod
    def parse(
        cls,
        entry: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        where: str,
        base_dir: Path,
        problems: list[str],
    ) -> TorchvisionSpec | None:
        from torchvision.models import get_model_weights

        n_before = len(problems)
        name = entry["model_name"]
        if not isinstance(name, str) or not check_choice(
            where, "torchvision model_name", name, _classification_models(), problems
        ):
            return None
        unknown_parameters(where, "torchvision", parameters, problems, allowed=("weights",))
        pretrained = entry.get("pretrained", parameters.get("weights"))
        if pretrained is True:
            weights_name: str | None = "DEFAULT"
        elif pretrained in (False, None):
            weights_name = None
        elif isinstance(pretrained, str):
            weights_name = pretrained.split(".")[-1]  # "ResNet50_Weights.V2" -> "V2"
            members = list(get_model_weights(name).__members__)
            check_choice(where, f"weights of {name}", weights_name, members, problems)
        else:
            problems.append(
                f"{where}: pretrained must be true/false or a weights name such as 'DEFAULT' "
                f"(got {pretrained!r})."
            )
            weights_name = None
        weights_file = parse_weights_file(entry, base_dir, where, problems)
        if len(problems) > n_before:
            return None
        return cls(model_name=name, weights_name=weights_name, weights_file=weights_file)


def torchvision_transform(
    spec: TorchvisionSpec, weights: Any
) -> tuple[Callable[[Any], torch.Tensor], dict[str, Any]]:
    """The weights' eval preset (the architecture's DEFAULT one without weights) + its description."""
    from torchvision.models import get_model_weights

    enum = weights if weights is not None else get_model_weights(spec.model_name).DEFAULT
    transform = enum.transforms()
    crop = list(getattr(transform, "crop_size", [224]))
    crop = crop * 2 if len(crop) == 1 else crop
    preprocessing = {
        "library": "torchvision",
        "weights": f"{type(enum).__name__}.{enum.name}",
        "input_size": [3, *crop],
        "mean": list(transform.mean),
        "std": list(transform.std),
        "interpolation": transform.interpolation.value,
        "resize": list(transform.resize_size) if transform.resize_size else None,
        "crop": crop,
        "steps": [type(transform).__name__],
    }
    return transform, preprocessing


def _n_categories(weights: Any, num_classes: int | None) -> int:
    if num_classes is not None:
        return num_classes
    if weights is not None and "categories" in weights.meta:
        return len(weights.meta["categories"])
    return 1000  # every torchvision classification builder's default


def _weights_enum(spec: TorchvisionSpec) -> Any:
    from torchvision.models import get_model_weights

    if spec.weights_name is None:
        return None
    return get_model_weights(spec.model_name)[spec.weights_name]


def _hub_checkpoint(weights: Any, where: str) -> None:
    """Check the weights' file is in the torch hub cache (or downloadable); else raise."""
    url_file(weights.url, Path(torch.hub.get_dir()) / "checkpoints", where=where)


def _skeleton(spec: ModelSpec, *, num_classes: int | None, weights: Any) -> nn.Module:
    """The architecture, sized like ``weights`` (classes, image size), without loading them."""
    import torchvision.models

    opts: TorchvisionSpec = spec.options
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    elif weights is not None and "categories" in weights.meta:
        kwargs["num_classes"] = len(weights.meta["categories"])
    if weights is not None and "min_size" in weights.meta and opts.model_name.startswith("vit"):
        kwargs["image_size"] = weights.meta["min_size"][0]
    return torchvision.models.get_model(opts.model_name, weights=None, **kwargs)


def build_torchvision(
    spec: ModelSpec, specs: Mapping[str, ModelSpec], *, models_dir: Path | None = None
) -> BuiltModel:
    """Build a ``torchvision`` entry: architecture, weights (cache first), eval preset.

    Raises:
        ConfigError: ``num_classes`` that contradicts the weights; a file that does not fit.
        WeightsNotFoundError: the weights are neither in the torch hub cache nor downloadable.
    """
    opts: TorchvisionSpec = spec.options
    where = entry_where(spec)
    if spec.img_size is not None:
        raise ConfigError(
            f"{where}: img_size is not supported for torchvision entries (got {spec.img_size}); "
            "the input size comes from the weights' preset."
        )
    weights = _weights_enum(opts)
    if weights is not None and opts.weights_file is None:
        n = len(weights.meta.get("categories", []))
        if spec.num_classes is not None and spec.num_classes != n:
            raise ConfigError(
                f"{where}: num_classes is {spec.num_classes} but {weights} has {n} categories. "
                "Remove num_classes, or give a local weights file with that head."
            )
        _hub_checkpoint(weights, where)
        import torchvision.models

        model = torchvision.models.get_model(opts.model_name, weights=weights)
    else:
        model = _skeleton(spec, num_classes=spec.num_classes, weights=weights)
        if opts.weights_file is not None:
            state_dict = load_state_dict_file(opts.weights_file)
            load_strict(
                model, state_dict, file=opts.weights_file, where=where, arch=spec, filter_fn=None
            )
    transform, preprocessing = torchvision_transform(opts, weights)
    n_classes = _n_categories(weights, spec.num_classes)
    return BuiltModel(
        model.eval(), transform, preprocessing, arch_id=spec.model_id, n_classes=n_classes
    )


def torchvision_onto(
    arch: ModelSpec,
    state_dict: dict[str, torch.Tensor],
    *,
    file: Path,
    where: str,
    num_classes: int | None = None,
    img_size: int | None = None,
) -> BuiltModel:
    """Load a checkpoint / variant state dict strictly onto ``arch``'s torchvision network.

    The head size is read from the checkpoint's last 2-d weight when ``num_classes`` is unset.
    """
    opts: TorchvisionSpec = arch.options
    weights = _weights_enum(opts)
    if num_classes is None:
        matrices = [v for v in state_dict.values() if v.ndim == 2]
        num_classes = int(matrices[-1].shape[0]) if matrices else arch.num_classes
    model = _skeleton(arch, num_classes=num_classes, weights=weights)
    load_strict(model, state_dict, file=file, where=where, arch=arch, filter_fn=None)
    transform, preprocessing = torchvision_transform(opts, weights)
    n_classes = _n_categories(weights, num_classes)
    return BuiltModel(
        model.eval(), transform, preprocessing, arch_id=arch.model_id, n_classes=n_classes
    )
