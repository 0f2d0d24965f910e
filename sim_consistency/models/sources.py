"""Model sources: how each ``source`` of a models-config entry becomes a network.

:data:`MODEL_SOURCES` maps every ``ModelSpec.source`` to a builder
``(spec, specs, *, models_dir) -> BuiltModel``:

* ``timm`` — ``timm.create_model``; pretrained weights (or a local ``weights`` file) are loaded
  the timm way, through ``pretrained_cfg_overlay=dict(file=...)``, so the family's
  ``checkpoint_filter_fn`` and classifier adaptation apply.
* ``open_clip`` — ``open_clip.create_model_and_transforms``; the visual tower is analysed,
  wrapped in :class:`~sim_consistency.models.classifier.ImageClassifier` (no head).
* ``checkpoint`` — the ``arch`` entry's architecture built without any download, then a state
  dict file loaded strictly onto it (timm head size inferred from the checkpoint; model-soups
  checkpoints become an ``ImageClassifier`` with their linear head).
* ``variant`` — the materialised ``models/<id>.safetensors`` loaded like a checkpoint onto the
  architecture its first ingredient / base resolves to.

Pretrained weights never trigger a slow or silent download: the Hugging Face cache is looked up
first (``HF_HUB_CACHE`` / ``HF_HOME`` read when the model is built); when the file is not there,
one metadata request without retries decides whether the hub is reachable, and if it is not a
:class:`~sim_consistency.errors.WeightsNotFoundError` says where we looked and how to provide
the weights. ``HF_HUB_OFFLINE=1`` skips the network entirely.
"""

from __future__ import annotations

import difflib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from sim_consistency.config.models import ModelSpec
from sim_consistency.errors import ConfigError, MissingInputError, WeightsNotFoundError
from sim_consistency.models.checkpoints import load_state_dict_file
from sim_consistency.models.classifier import ImageClassifier

__all__ = [
    "MODEL_SOURCES",
    "BuiltModel",
    "ModelBuilder",
    "architecture_chain",
    "architecture_spec",
    "build_checkpoint",
    "build_open_clip",
    "build_timm",
    "build_variant",
    "hf_hub_cache_dir",
    "inherited_option",
    "resolve_hub_file",
]

#: Seconds the single hub reachability request may take before the hub counts as unreachable.
HUB_PROBE_TIMEOUT_S = 8.0


@dataclass
class BuiltModel:
    """A freshly built network with the eval transform its pretrained config asks for.

    Attributes:
        model: the module to analyse (CPU, eval mode).
        transform: PIL image -> ``(3, h, w)`` tensor, the library's eval preprocessing.
        preprocessing: JSON-able description of ``transform`` (goes into content keys).
        arch_id: the models-config entry that defined the architecture.
    """

    model: nn.Module
    transform: Callable[[Any], torch.Tensor]
    preprocessing: dict[str, Any]
    arch_id: str


#: ``builder(spec, specs, *, models_dir) -> BuiltModel``: one per entry of :data:`MODEL_SOURCES`.
ModelBuilder = Callable[..., BuiltModel]


def _where(spec: ModelSpec) -> str:
    return f"models config entry '{spec.model_id}'"


# -- Hugging Face hub: cache first, fail fast ---------------------------------------------------


def hf_hub_cache_dir() -> Path:
    """Return the Hugging Face hub cache folder, from the environment as it is now.

    Same precedence as ``huggingface_hub``: ``HF_HUB_CACHE`` > ``HUGGINGFACE_HUB_CACHE`` >
    ``$HF_HOME/hub`` > ``$XDG_CACHE_HOME/huggingface/hub`` > ``~/.cache/huggingface/hub``. Read
    at call time (``huggingface_hub`` reads it once at import), so a changed ``HF_HOME`` counts.
    """
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.path.expanduser(os.environ[var])))
    if os.environ.get("HF_HOME"):
        home = Path(os.path.expandvars(os.path.expanduser(os.environ["HF_HOME"])))
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = Path(xdg) / "huggingface"
    return home / "hub"


def _hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _hub_offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or flag.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _how_to_provide(repo_id: str, cache_dir: Path) -> str:
    return (
        'Provide the weights: add "weights": "/path/to/model.safetensors" to the entry (a local '
        f"file), or populate the Hugging Face cache (`hf download {repo_id}` on a machine with "
        f"internet, then copy {cache_dir} here), or point HF_HOME / HF_HUB_CACHE at a cache that "
        "has it."
    )


def resolve_hub_file(
    repo_id: str,
    filenames: Sequence[str],
    *,
    revision: str | None = None,
    where: str,
) -> Path:
    """Return a local path to the first of ``filenames`` that ``repo_id`` provides.

    Looks in the Hugging Face cache (:func:`hf_hub_cache_dir`) first. If none is cached and the
    hub may be used (``HF_HUB_OFFLINE`` unset), one metadata request per candidate file, with no
    retries, finds the file, which is then downloaded into that cache.

    Args:
        repo_id: hub repository, e.g. ``timm/test_vit.r160_in1k``.
        filenames: candidate files in order of preference.
        revision: branch, tag or commit (default ``main``).
        where: who asks, for error messages.

    Raises:
        WeightsNotFoundError: not cached and the hub is offline, unreachable or lacks the files.
    """
    from huggingface_hub import (
        get_hf_file_metadata,
        hf_hub_download,
        hf_hub_url,
        try_to_load_from_cache,
    )
    from huggingface_hub.errors import EntryNotFoundError

    cache_dir = hf_hub_cache_dir()
    for filename in filenames:
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        if isinstance(cached, str | os.PathLike) and Path(cached).is_file():
            return Path(cached)
    looked = (
        f"looked for {' or '.join(filenames)} of {repo_id}"
        + (f"@{revision}" if revision else "")
        + f" in the Hugging Face cache {cache_dir}"
    )
    if _hub_offline():
        raise WeightsNotFoundError(
            f"{where}: pretrained weights are not cached and HF_HUB_OFFLINE is set ({looked}). "
            + _how_to_provide(repo_id, cache_dir)
        )
    endpoint = _hub_endpoint()
    remote_missing = getattr(
        sys.modules["huggingface_hub.errors"], "RemoteEntryNotFoundError", EntryNotFoundError
    )
    for filename in filenames:
        url = hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint)
        try:
            get_hf_file_metadata(url, timeout=HUB_PROBE_TIMEOUT_S)
        except remote_missing:
            continue
        except Exception as exc:  # connection refused, DNS failure, timeout, 401/404 repo, …
            raise WeightsNotFoundError(
                f"{where}: pretrained weights are not available ({looked}; the hub at "
                f"{endpoint} could not be reached: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}). "
                + _how_to_provide(repo_id, cache_dir)
            ) from exc
        try:
            path = hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir, endpoint=endpoint
            )
        except Exception as exc:
            raise WeightsNotFoundError(
                f"{where}: downloading {filename} of {repo_id} from {endpoint} into {cache_dir} "
                f"failed ({type(exc).__name__}: {exc}). " + _how_to_provide(repo_id, cache_dir)
            ) from exc
        return Path(path)
    raise WeightsNotFoundError(
        f"{where}: the hub repository {repo_id} at {endpoint} has none of "
        f"{', '.join(filenames)} ({looked}). " + _how_to_provide(repo_id, cache_dir)
    )


def _url_file(url: str, cache_dir: Path, *, where: str) -> Path | None:
    """Return the cached copy of a URL-hosted checkpoint, or ``None`` when it can be downloaded.

    Raises:
        WeightsNotFoundError: not cached and the host does not answer one HEAD request.
    """
    cached = cache_dir / os.path.basename(urlparse(url).path)
    if cached.is_file():
        return cached

    def not_available(reason: str) -> WeightsNotFoundError:
        return WeightsNotFoundError(
            f"{where}: pretrained weights are not available (looked for {cached}; {url} could "
            f'not be reached: {reason}). Provide the weights: add "weights": "/path/to/file" to '
            f"the entry (a local file), or put the file at {cached}."
        )

    if _hub_offline():
        raise not_available("HF_HUB_OFFLINE is set")
    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=HUB_PROBE_TIMEOUT_S):
            pass
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise not_available(str(exc)) from exc
    return None


def _safe_alternatives(filename: str) -> list[str]:
    """``filename`` preceded by its safetensors twin, the order timm and open_clip try them."""
    twins = {
        "pytorch_model.bin": "model.safetensors",
        "open_clip_pytorch_model.bin": "open_clip_model.safetensors",
    }
    if filename in twins:
        return [twins[filename], filename]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


# -- the spec chain: which entry defines the architecture ---------------------------------------


def architecture_chain(spec: ModelSpec, specs: Mapping[str, ModelSpec]) -> list[ModelSpec]:
    """Return ``spec`` followed by the entries it is built on, ending at a timm/open_clip entry.

    A checkpoint follows its ``arch``; a variant its first reference (first ingredient, or
    ``base``), recursively.

    Raises:
        ConfigError: a reference is unknown or the chain has no timm/open_clip entry.
    """
    chain = [spec]
    current = spec
    while current.source in ("checkpoint", "variant"):
        refs = current.references()
        if not refs or refs[0] not in specs:
            raise ConfigError(
                f"{_where(current)}: cannot find the entry that defines its architecture "
                f"(got references {list(refs)}). Name an existing timm or open_clip entry."
            )
        current = specs[refs[0]]
        if current in chain:
            raise ConfigError(f"{_where(spec)}: reference cycle through '{current.model_id}'.")
        chain.append(current)
    return chain


def architecture_spec(spec: ModelSpec, specs: Mapping[str, ModelSpec]) -> ModelSpec:
    """Return the timm/open_clip entry whose architecture ``spec`` is built on (itself if so)."""
    return architecture_chain(spec, specs)[-1]


def inherited_option(spec: ModelSpec, specs: Mapping[str, ModelSpec], name: str) -> Any:
    """Return ``spec.<name>``, else the first value set along its architecture chain."""
    for entry in architecture_chain(spec, specs):
        value = getattr(entry, name)
        if value is not None:
            return value
    return None


# -- transforms -------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Tuples (timm and open_clip configs use them) -> lists, recursively."""
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def _transform_steps(transform: Any) -> dict[str, Any]:
    """Resize/crop sizes and step names of a torchvision ``Compose`` (for the content key)."""
    steps = getattr(transform, "transforms", [transform])
    names, resize, crop = [], None, None
    for step in steps:
        names.append(getattr(step, "__name__", type(step).__name__))
        if resize is None and type(step).__name__ in ("Resize", "ResizeKeepRatio"):
            resize = _jsonable(getattr(step, "size", None))
        if crop is None and type(step).__name__ in ("CenterCrop", "CenterCropOrPad"):
            crop = _jsonable(getattr(step, "size", None))
    return {"resize": resize, "crop": crop, "steps": names}


def _timm_transform(model: nn.Module, img_size: int | None) -> tuple[Callable, dict[str, Any]]:
    from timm.data import create_transform, resolve_model_data_config

    config = resolve_model_data_config(model)
    if img_size is not None:
        config["input_size"] = (config["input_size"][0], img_size, img_size)
    transform = create_transform(**config, is_training=False)
    preprocessing = {
        "library": "timm",
        "input_size": _jsonable(config["input_size"]),
        "mean": _jsonable(config["mean"]),
        "std": _jsonable(config["std"]),
        "interpolation": config["interpolation"],
        "crop_pct": config.get("crop_pct"),
        "crop_mode": config.get("crop_mode"),
        **_transform_steps(transform),
    }
    return transform, preprocessing


def _open_clip_transform(visual: nn.Module) -> tuple[Callable, dict[str, Any]]:
    from open_clip.transform import PreprocessCfg, image_transform_v2

    preprocess_cfg = visual.preprocess_cfg
    if not isinstance(preprocess_cfg, Mapping):
        raise TypeError(f"open_clip visual tower {type(visual).__name__} has no preprocess_cfg.")
    cfg = dict(preprocess_cfg)
    transform = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    size = cfg["size"]
    size = [size, size] if isinstance(size, int) else list(size)
    preprocessing = {
        "library": "open_clip",
        "input_size": [3, *size],
        "mean": _jsonable(cfg["mean"]),
        "std": _jsonable(cfg["std"]),
        "interpolation": cfg["interpolation"],
        "resize_mode": cfg["resize_mode"],
        "fill_color": cfg.get("fill_color"),
        **_transform_steps(transform),
    }
    return transform, preprocessing


# -- timm -------------------------------------------------------------------------------------


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
            _safe_alternatives(cfg.hf_hub_filename)
            if cfg.hf_hub_filename
            else ["model.safetensors", "pytorch_model.bin"]
        )
        return resolve_hub_file(repo_id, filenames, revision=revision or None, where=where)
    if cfg.url:
        return _url_file(cfg.url, Path(torch.hub.get_dir()) / "checkpoints", where=where)
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
    transform, preprocessing = _timm_transform(model, spec.img_size)
    return BuiltModel(model, transform, preprocessing, arch_id=spec.model_id)


# -- open_clip --------------------------------------------------------------------------------


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


def _visual_tower(clip_model: nn.Module) -> nn.Module:
    """Return the vision tower (``.visual``) of an open_clip model."""
    visual = clip_model.visual
    if not isinstance(visual, nn.Module):
        raise TypeError(f"open_clip model {type(clip_model).__name__} has no visual tower.")
    return visual


def _open_clip_weights(spec: ModelSpec, tag_cfg: Mapping[str, Any]) -> str | None:
    """Local weights of an open_clip entry (file path or ``local-dir:`` model name)."""
    where = _where(spec)
    if spec.weights is not None:
        return str(spec.weights)
    if not tag_cfg:
        return None
    if tag_cfg.get("hf_hub"):
        repo_id, filename = _split_open_clip_hub(tag_cfg["hf_hub"])
        return str(resolve_hub_file(repo_id, _safe_alternatives(filename), where=where))
    if tag_cfg.get("url"):
        cache = Path(os.path.expanduser("~/.cache/clip"))
        found = _url_file(tag_cfg["url"], cache, where=where)
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
    clip_model = _open_clip_create(spec, tag_cfg, pretrained, spec.img_size)
    visual = _visual_tower(clip_model)
    model = ImageClassifier(visual).eval()
    transform, preprocessing = _open_clip_transform(visual)
    return BuiltModel(model, transform, preprocessing, arch_id=spec.model_id)


def _with_model_name(spec: ModelSpec, model_name: str) -> ModelSpec:
    return replace(spec, model_name=model_name, pretrained=False)


# -- checkpoints and variants: a state dict onto an entry's architecture ---------------------


def _key_problems(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} (file {tuple(state_dict[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    for label, keys in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("shape mismatch", mismatched),
    ):
        if keys:
            examples = ", ".join(keys[:5]) + (", …" if len(keys) > 5 else "")
            problems.append(f"{len(keys)} {label} ({examples})")
    return problems


def _load_strict(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    file: Path,
    where: str,
    arch: ModelSpec,
    filter_fn: Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]] | None,
) -> None:
    """Load ``state_dict`` into ``model`` with every key and shape matching.

    When the raw keys do not fit and the family has a checkpoint filter (timm's
    ``checkpoint_filter_fn``: foreign layouts, resized position embeddings), the filtered dict
    is used if it fits exactly.
    """
    problems = _key_problems(model, state_dict)
    if problems and filter_fn is not None:
        try:
            filtered = filter_fn(dict(state_dict), model)
        except Exception:  # a filter that cannot parse this layout: report the raw mismatch
            filtered = None
        if filtered is not None and not _key_problems(model, filtered):
            state_dict, problems = dict(filtered), []
    if problems:
        raise ConfigError(
            f"{file}: does not fit the architecture of '{arch.model_id}' "
            f"({arch.source} {arch.model_name}) for {where}: "
            + "; ".join(problems)
            + ". Check that 'arch' names the architecture the checkpoint was trained with."
        )
    model.load_state_dict(state_dict, strict=True)


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


def _timm_filter_fn(model: nn.Module) -> Callable | None:
    module = sys.modules.get(type(model).__module__)
    return getattr(module, "checkpoint_filter_fn", None)


def _timm_onto(
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
    _load_strict(
        model, state_dict, file=file, where=where, arch=arch, filter_fn=_timm_filter_fn(model)
    )
    model.eval()
    transform, preprocessing = _timm_transform(model, img_size)
    return BuiltModel(model, transform, preprocessing, arch_id=arch.model_id)


def _open_clip_onto(
    arch: ModelSpec,
    state_dict: dict[str, torch.Tensor],
    *,
    file: Path,
    where: str,
    img_size: int | None,
) -> BuiltModel:
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
        out_dim = getattr(_visual_tower(clip_model), "output_dim", weight.shape[1])
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

    _load_strict(model, state_dict, file=file, where=where, arch=arch, filter_fn=resize_positions)
    model.eval()
    transform, preprocessing = _open_clip_transform(visual)
    return BuiltModel(model, transform, preprocessing, arch_id=arch.model_id)


def _build_from_state_dict(
    spec: ModelSpec, specs: Mapping[str, ModelSpec], file: Path
) -> BuiltModel:
    arch = architecture_spec(spec, specs)
    state_dict = load_state_dict_file(file)
    img_size = inherited_option(spec, specs, "img_size")
    where = _where(spec)
    if arch.source == "timm":
        return _timm_onto(
            arch,
            state_dict,
            file=file,
            where=where,
            num_classes=spec.num_classes,
            img_size=img_size,
        )
    if arch.source == "open_clip":
        return _open_clip_onto(arch, state_dict, file=file, where=where, img_size=img_size)
    raise ConfigError(
        f"{where}: architecture entry '{arch.model_id}' has source "
        f"{arch.source!r}; it must be timm or open_clip."
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


#: Every ``ModelSpec.source``, mapped to the function that builds it.
MODEL_SOURCES: dict[str, ModelBuilder] = {
    "timm": build_timm,
    "open_clip": build_open_clip,
    "checkpoint": build_checkpoint,
    "variant": build_variant,
}
