"""The ``python`` source: the user's own architecture, built by a factory function.

``"factory": "my_pkg.models:create_cifar10_resnet18"`` is imported (with ``python_path``
folders, relative to the config, put in front of ``sys.path`` for the import) and called with
``kwargs``; a ``weights`` file is loaded strictly onto the result (else it stays at its seeded
random initialisation). Nothing about the model is known to us, so its eval preprocessing is
given in ``transform``: ``{"input_size": 32, "mean": [...], "std": [...]}`` plus optional
``resize`` (shorter side before the centre crop; default ``input_size``) and
``interpolation``. ``num_classes`` declares that the model's output is logits over that many
classes (head accuracy, greedy / pruned soups). Checkpoints and every variant method work on
top of a ``python`` entry like on any other architecture.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from sim_consistency.config.models import ModelSpec
from sim_consistency.errors import ConfigError
from sim_consistency.models.checkpoints import load_state_dict_file
from sim_consistency.models.sources._base import BuiltModel, entry_where, load_strict
from sim_consistency.models.sources._spec import (
    SourceSpec,
    check_choice,
    parse_weights_file,
    resolve_file,
    unknown_parameters,
)

__all__ = ["PythonSpec", "TransformSpec", "build_python", "python_onto"]

_FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class TransformSpec:
    """Eval preprocessing: resize the shorter side, centre-crop, to tensor, normalise.

    Attributes:
        input_size: side of the square crop fed to the model.
        mean: per-channel mean (3 values).
        std: per-channel standard deviation (3 values).
        resize: shorter side before the crop (``input_size`` when unset: no cropping).
        interpolation: ``bilinear`` (default), ``bicubic`` or ``nearest``.
        squash: resize to ``input_size`` x ``input_size`` ignoring the aspect ratio (Hugging
            Face image processors without a centre crop), instead of shorter side + crop.
    """

    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: int | None = None
    interpolation: str = "bilinear"
    squash: bool = False

    @classmethod
    def parse(cls, value: Any, where: str, problems: list[str]) -> TransformSpec | None:
        """Validate a ``transform`` object; ``None`` after appending to ``problems``."""
        n_before = len(problems)
        if not isinstance(value, dict):
            problems.append(
                f"{where}: transform must be an object with input_size, mean, std (got {value!r})."
            )
            return None
        allowed = {"input_size", "mean", "std", "resize", "interpolation"}
        for key in sorted(set(value) - allowed):
            problems.append(
                f"{where}: unknown transform key {key!r}. Allowed: {', '.join(sorted(allowed))}."
            )
        for key in ("input_size", "mean", "std"):
            if key not in value:
                problems.append(f"{where}: transform needs key '{key}'.")
        for key in ("input_size", "resize"):
            v = value.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                problems.append(f"{where}: transform.{key} must be a positive integer (got {v!r}).")
        for key in ("mean", "std"):
            v = value.get(key)
            if v is not None and not (
                isinstance(v, list)
                and len(v) == 3
                and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
            ):
                problems.append(f"{where}: transform.{key} must be 3 numbers (got {v!r}).")
        if (
            "std" in value
            and isinstance(value["std"], list)
            and any(isinstance(x, int | float) and x <= 0 for x in value["std"])
        ):
            problems.append(f"{where}: transform.std must be positive (got {value['std']!r}).")
        interpolation = value.get("interpolation", "bilinear")
        check_choice(where, "transform.interpolation", interpolation, _INTERPOLATIONS, problems)
        if len(problems) > n_before:
            return None
        return cls(
            input_size=value["input_size"],
            mean=tuple(float(x) for x in value["mean"]),
            std=tuple(float(x) for x in value["std"]),
            resize=value.get("resize"),
            interpolation=interpolation,
        )

    def recipe(self) -> dict[str, Any]:
        """Plain JSON of the transform."""
        return {
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": self.resize,
            "interpolation": self.interpolation,
            "squash": self.squash,
        }

    def build(self) -> tuple[Callable[[Any], torch.Tensor], dict[str, Any]]:
        """The torchvision ``Compose`` and its content-key description."""
        from torchvision import transforms as T

        mode = T.InterpolationMode(self.interpolation)
        resize = self.resize or self.input_size
        size = (self.input_size, self.input_size) if self.squash else resize
        transform = T.Compose(
            [
                T.Resize(size, interpolation=mode),
                T.CenterCrop(self.input_size),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )
        preprocessing = {
            "library": "python",
            "input_size": [3, self.input_size, self.input_size],
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize": [self.input_size, self.input_size] if self.squash else resize,
            "crop": [self.input_size, self.input_size],
            "steps": [type(t).__name__ for t in transform.transforms],
        }
        return transform, preprocessing


@dataclass(frozen=True)
class PythonSpec(SourceSpec):
    """A user factory ``"pkg.module:function"`` and what to do with its model.

    Attributes:
        factory: ``module:attribute`` of a callable returning an ``nn.Module``.
        transform: the eval preprocessing.
        kwargs: keyword arguments of the factory (JSON values).
        weights: a state dict loaded strictly onto the model.
        python_path: folders put in front of ``sys.path`` while importing the factory.
    """

    KEYS = frozenset({"factory", "kwargs", "weights", "transform", "python_path"})
    REQUIRED = frozenset({"factory", "transform"})

    factory: str
    transform: TransformSpec
    kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    weights: Path | None = None
    python_path: tuple[Path, ...] = ()

    @property
    def label(self) -> str:
        return self.factory

    def without_weights(self) -> PythonSpec:
        return replace(self, weights=None)

    @classmethod
    def parse(
        cls,
        entry: Mapping[str, Any],
        parameters: Mapping[str, Any],
        *,
        where: str,
        base_dir: Path,
        problems: list[str],
    ) -> PythonSpec | None:
        n_before = len(problems)
        factory = entry["factory"]
        if not isinstance(factory, str) or not _FACTORY.fullmatch(factory):
            problems.append(
                f"{where}: factory must be 'package.module:function' (got {factory!r})."
            )
        unknown_parameters(
            where, "python", parameters, problems, note=" Factory arguments go in 'kwargs'."
        )
        kwargs = entry.get("kwargs", {})
        if not isinstance(kwargs, dict):
            problems.append(f"{where}: kwargs must be an object (got {kwargs!r}).")
        transform = TransformSpec.parse(entry["transform"], where, problems)
        weights = parse_weights_file(entry, base_dir, where, problems)
        raw_paths = entry.get("python_path", [])
        raw_paths = [raw_paths] if isinstance(raw_paths, str) else raw_paths
        paths: list[Path] = []
        if not isinstance(raw_paths, list) or not all(isinstance(p, str) for p in raw_paths):
            problems.append(f"{where}: python_path must be a folder or a list of folders.")
        else:
            for raw in raw_paths:
                folder = resolve_file(raw, base_dir)
                if not folder.is_dir():
                    problems.append(f"{where}: python_path folder {folder} does not exist.")
                paths.append(folder)
        if len(problems) > n_before or transform is None:
            return None
        return cls(
            factory=factory,
            transform=transform,
            kwargs=MappingProxyType(dict(kwargs)),
            weights=weights,
            python_path=tuple(paths),
        )


def _factory(opts: PythonSpec, where: str) -> Callable[..., Any]:
    """Import the factory, with ``python_path`` in front of ``sys.path`` during the import."""
    module_name, _, attribute = opts.factory.partition(":")
    added = [str(p) for p in opts.python_path]
    sys.path[:0] = added
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        looked = ", ".join(added) or "sys.path only"
        raise ConfigError(
            f"{where}: cannot import {module_name!r} for factory {opts.factory!r} ({exc}; "
            f"python_path: {looked}). Add the folder holding the package to 'python_path'."
        ) from exc
    finally:
        for path in added:
            sys.path.remove(path)
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(
                f"{where}: module {module_name!r} ({getattr(module, '__file__', '?')}) has no "
                f"attribute {attribute!r}. Check the factory name."
            )
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{where}: factory {opts.factory!r} is not callable.")
    return target


def _skeleton(spec: ModelSpec) -> nn.Module:
    opts: PythonSpec = spec.options
    where = entry_where(spec)
    fn = _factory(opts, where)
    try:
        model = fn(**dict(opts.kwargs))
    except TypeError as exc:
        raise ConfigError(
            f"{where}: factory {opts.factory!r} rejected kwargs {dict(opts.kwargs)} ({exc})."
        ) from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"{where}: factory {opts.factory!r} returned a {type(model).__name__}, not a "
            "torch.nn.Module."
        )
    return model


def build_python(
    spec: ModelSpec, specs: Mapping[str, ModelSpec], *, models_dir: Path | None = None
) -> BuiltModel:
    """Build a ``python`` entry: the factory's model, its ``weights`` file, the given transform.

    Raises:
        ConfigError: the factory cannot be imported or called, or the weights do not fit.
    """
    opts: PythonSpec = spec.options
    model = _skeleton(spec)
    if opts.weights is not None:
        state_dict = load_state_dict_file(opts.weights)
        load_strict(
            model, state_dict, file=opts.weights, where=entry_where(spec), arch=spec, filter_fn=None
        )
    transform, preprocessing = opts.transform.build()
    return BuiltModel(
        model.eval(), transform, preprocessing, arch_id=spec.model_id, n_classes=spec.num_classes
    )


def python_onto(
    arch: ModelSpec,
    state_dict: dict[str, torch.Tensor],
    *,
    file: Path,
    where: str,
    num_classes: int | None = None,
    img_size: int | None = None,
) -> BuiltModel:
    """Load a checkpoint / variant state dict strictly onto the factory's model."""
    model = _skeleton(arch)
    load_strict(model, state_dict, file=file, where=where, arch=arch, filter_fn=None)
    transform, preprocessing = arch.options.transform.build()
    n_classes = num_classes if num_classes is not None else arch.num_classes
    return BuiltModel(
        model.eval(), transform, preprocessing, arch_id=arch.model_id, n_classes=n_classes
    )
