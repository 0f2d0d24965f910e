"""From a variant entry of the models config to a materialised ``models/<id>.safetensors``.

:data:`VARIANT_METHODS` maps every ``variant.method`` of the config to the function that builds
its state dict from the entries it references; :func:`build_variant_state_dict` runs it (with
the BatchNorm policy and held-out evaluation it needs) and :func:`materialise_variant` writes
``<root>/models/<id>.safetensors`` + ``<id>.json`` (recipe, ingredient weight digests, per-step
log, per-layer statistics) atomically, building referenced variants first and skipping outputs
whose *variant key* — a digest of the recipe and of every ingredient's identity (recipes, file
digests, referenced variants' keys) — is unchanged.

Recipe options and defaults (every key and value is validated when the config loads, by the
method's spec class in :mod:`sim_consistency.config.variants`, which also holds the defaults;
:func:`build_variant_state_dict` re-checks specs built by hand):

* ``uniform`` / ``weighted``: ``ingredients``, ``weights`` (normalised by their sum).
* ``greedy``: ``heldout`` (``"<dataset>:<split>"``), ``heldout_max_samples`` (a seeded,
  class-stratified subset of the held-out split; default all rows), ``test`` (default
  ``<dataset>:test``; must differ from ``heldout``), ``accept`` (``">="``), ``order``
  (``"sorted"``), ``seed`` (0, the ``"random"`` order's shuffle of all but the best),
  ``metric`` (``"accuracy"``, the only one).
* ``pruned``: ``heldout``, ``heldout_max_samples``, ``test``, ``metric`` (deterministic: the
  best candidate is kept, the others tried worst first).
* ``wise_ft`` / ``interpolate``: ``base`` (zero-shot), ``finetuned``, ``alpha`` (0.5).
* ``task_arithmetic``: ``base``, ``finetuned`` (id or list), ``lam`` (1.0), ``coeffs``,
  ``negate`` (false; true multiplies λ by −1).
* ``ties``: ``base``, ``finetuned``, ``keep`` (0.2), ``lam`` (1.0), ``scope`` (``"global"``).
* ``monosoup`` / ``highonly`` / ``lowonly``: ``base``, ``finetuned``, ``preset`` (none; a
  reference script's settings by name, see ``MONOSOUP_PRESETS``), ``rank_rule``
  (``"vetterli"``), ``R`` (0.8), ``min_rel_update`` (1e-6) — explicit keys override the
  preset —, ``untouched_from`` (``"finetuned"``), ``include_buffers`` (false: parameters only).
* Averaging methods (uniform, weighted, greedy, pruned, wise_ft, interpolate): ``bn_policy``
  (``"average"`` | ``"from_anchor"`` | ``"reset"``, default ``average``), ``bn_split``
  (``"<dataset>:<split>"``, needed by ``reset``), ``bn_max_samples`` (subset of it),
  ``anchor`` (for ``from_anchor``; default the first ingredient / the base). The policy is
  applied to the final soup; greedy/pruned score their candidate soups with averaged statistics.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch

from sim_consistency.config.models import ModelSpec, VariantSpec
from sim_consistency.config.variants import (
    MONOSOUP_PRESETS,
    RankRule,
    check_variant,
)
from sim_consistency.data import load_dataset
from sim_consistency.errors import ConfigError, MergeError, NonFiniteError
from sim_consistency.io import atomic_output, atomic_write_text
from sim_consistency.merging.batchnorm import (
    batchnorm_buffer_names,
    copy_batchnorm_buffers,
    recompute_batchnorm,
)
from sim_consistency.merging.evaluate import PreprocessedSplit, accuracy
from sim_consistency.merging.monosoup import monosoup
from sim_consistency.merging.soups import greedy_soup, pruned_soup, uniform_soup
from sim_consistency.merging.state import StateDict, check_finite
from sim_consistency.merging.task_vectors import task_arithmetic, ties_merge
from sim_consistency.merging.wise_ft import wise_ft
from sim_consistency.models import LoadedModel, create_model, state_dict_sha256
from sim_consistency.outputs import file_digest, json_digest
from sim_consistency.project import ProjectLocation

__all__ = [
    "VARIANT_METHODS",
    "MERGING_CODE_VERSION",
    "METHOD_REVISIONS",
    "VariantBuild",
    "BuildContext",
    "build_variant_state_dict",
    "materialise_variant",
    "variant_key",
    "is_materialised",
    "weights_identity",
]

log = logging.getLogger("sim_consistency.merging.build")

#: Bumped when a change to this package changes the numbers a recipe produces.
MERGING_CODE_VERSION = "1"
#: Per-method revision in the variant key, bumped when the same recipe builds other weights, so
#: that only that method's variants are rebuilt. 2: greedy ``order="random"`` starts from the
#: best and ``accept=">"`` ranks ties as model-soups' main.py; pruned never removes the best
#: candidate; MonoSoup edits parameters only by default.
METHOD_REVISIONS: dict[str, int] = {
    "greedy": 2,
    "pruned": 2,
    "monosoup": 2,
    "highonly": 2,
    "lowonly": 2,
}
_AVERAGING = ("uniform", "weighted", "greedy", "pruned", "wise_ft", "interpolate")


@dataclass
class VariantBuild:
    """A built variant: its weights and what went into them (written as ``<id>.json``)."""

    state_dict: StateDict
    ingredients: list[dict[str, str]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    batchnorm: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # resolved options, defaults included


def _variant_of(spec: ModelSpec) -> VariantSpec:
    """Return the ``variant`` of entry ``spec``; ConfigError if it is not a variant entry."""
    if spec.variant is None:
        raise ConfigError(f"entry '{spec.model_id}' is not a variant (source {spec.source!r}).")
    return spec.variant


@dataclass
class BuildContext:
    """What a variant builder needs: the config, the project, a device, and model loading."""

    spec: ModelSpec
    specs: Mapping[str, ModelSpec]
    location: ProjectLocation
    device: torch.device
    _loaded: dict[str, str] = field(default_factory=dict)
    _last: LoadedModel | None = None  # the last model built, reused when asked for again

    @property
    def variant(self) -> VariantSpec:
        """The entry's ``variant`` (a context is only made for variant entries)."""
        return _variant_of(self.spec)

    @property
    def where(self) -> str:
        return f"variant '{self.spec.model_id}' ({self.variant.method})"

    def option(self, name: str) -> Any:
        """The value of parameter ``name``: the config's, else the method's default."""
        return self.variant.settings()[name]

    def load(self, model_id: str) -> StateDict:
        """Return the state dict of entry ``model_id`` (built through the model factory)."""
        loaded = self.load_model(model_id)
        self._loaded[model_id] = loaded.weights_sha256
        return {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}

    def load_model(self, model_id: str) -> LoadedModel:
        """Build entry ``model_id`` on the CPU (materialising it first if it is a variant)."""
        if self._last is not None and self._last.model_id == model_id:
            return self._last
        if model_id not in self.specs:
            raise ConfigError(f"{self.where}: references unknown entry '{model_id}'.")
        ref = self.specs[model_id]
        if ref.is_variant:
            materialise_variant(ref, self.specs, location=self.location, device=self.device)
        self._last = None  # at most one model held: soups stream their ingredients
        self._last = create_model(ref, self.specs, device="cpu", location=self.location)
        return self._last

    def architecture(self, default_id: str) -> LoadedModel:
        """A model of the ingredients' architecture: the one built last, else ``default_id``."""
        return self._last if self._last is not None else self.load_model(default_id)

    def ingredients(self) -> list[dict[str, str]]:
        return [{"id": k, "weights_sha256": v} for k, v in self._loaded.items()]


# -- option parsing ---------------------------------------------------------------------------


def _split_ref(value: str) -> tuple[str, str]:
    """``"<dataset>:<split>"`` (validated at load) -> ``(dataset, split)``."""
    dataset, split = value.rsplit(":", 1)
    return dataset, split


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _heldout_split(ctx: BuildContext) -> tuple[str, str]:
    return _split_ref(ctx.option("heldout"))


def _preprocessed(
    ctx: BuildContext, loaded: LoadedModel, ref: tuple[str, str], max_samples_key: str
) -> PreprocessedSplit:
    dataset, split = ref
    max_samples = ctx.option(max_samples_key)
    data = load_dataset(
        dataset, split, location=ctx.location, transform=loaded.transform, max_samples=max_samples
    )
    if len(data) == 0:
        raise ConfigError(f"{ctx.where}: split {dataset}:{split} is empty.")
    return PreprocessedSplit.from_dataset(data)


def _evaluator(
    ctx: BuildContext, first: str, settings: dict[str, Any]
) -> Callable[[Mapping[str, torch.Tensor]], float]:
    """Held-out accuracy of a state dict on ``first``'s architecture; fills ``settings``."""
    heldout = _heldout_split(ctx)
    loaded = ctx.load_model(first)
    if not loaded.has_head:
        raise ConfigError(
            f"{ctx.where}: held-out accuracy needs a classification head, but '{first}' has "
            "none. Set num_classes on the architecture entry, or use a uniform soup."
        )
    split = _preprocessed(ctx, loaded, heldout, "heldout_max_samples")
    model = loaded.model
    log.info("%s: held-out split %s:%s, %d rows", ctx.where, *heldout, len(split))
    settings.update(
        heldout=":".join(heldout),
        test=ctx.option("test") or f"{heldout[0]}:test",
        heldout_rows=len(split),
        metric="accuracy",
    )

    def evaluate(state_dict: Mapping[str, torch.Tensor]) -> float:
        return accuracy(model, split, state_dict, device=ctx.device)

    return evaluate


# -- BatchNorm policy -------------------------------------------------------------------------


def _apply_bn_policy(ctx: BuildContext, built: VariantBuild, anchor_default: str) -> None:
    policy = ctx.option("bn_policy")  # one of BN_POLICIES: validated at load
    arch = ctx.architecture(anchor_default)
    names = batchnorm_buffer_names(arch.model)
    built.batchnorm = {"policy": policy, "n_buffers": len(names)}
    if not names:
        if policy != "average":
            log.info("%s: no BatchNorm layers; bn_policy '%s' is a no-op", ctx.where, policy)
        built.batchnorm["note"] = "no BatchNorm layers"
        return
    if policy == "average":
        return
    if policy == "from_anchor":
        anchor = ctx.option("anchor") or anchor_default
        built.state_dict = copy_batchnorm_buffers(built.state_dict, ctx.load(anchor), names)
        built.batchnorm["anchor"] = anchor
        log.info("%s: BatchNorm statistics copied from '%s'", ctx.where, anchor)
        return
    bn_split = _split_ref(ctx.option("bn_split"))  # required with reset: validated at load
    data = _preprocessed(ctx, arch, bn_split, "bn_max_samples")
    model = arch.model
    model.load_state_dict(built.state_dict, strict=True)
    model.to(ctx.device)
    n_layers = recompute_batchnorm(model, data.batches(), device=ctx.device)
    built.state_dict = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    built.batchnorm.update({"split": ":".join(bn_split), "n_rows": len(data), "n_layers": n_layers})
    log.info(
        "%s: BatchNorm statistics of %d layers recomputed on %s (%d rows)",
        ctx.where,
        n_layers,
        ":".join(bn_split),
        len(data),
    )


# -- methods ----------------------------------------------------------------------------------


def _build_uniform(ctx: BuildContext) -> VariantBuild:
    ids = _as_list(ctx.option("ingredients"))
    weights = ctx.option("weights")
    if weights is not None:
        weights = [float(w) for w in weights]  # one per ingredient: validated at load

    def stream():
        for i, model_id in enumerate(ids):
            log.info("%s: adding ingredient %d/%d '%s'", ctx.where, i + 1, len(ids), model_id)
            yield model_id, ctx.load(model_id)

    state_dict = uniform_soup(stream(), weights)
    steps = [{"id": i, "weight": (weights[n] if weights else 1.0)} for n, i in enumerate(ids)]
    built = VariantBuild(state_dict, steps=steps, settings={"weights": weights})
    _apply_bn_policy(ctx, built, ids[0])
    return built


def _candidates(ctx: BuildContext) -> dict[str, StateDict]:
    return {model_id: ctx.load(model_id) for model_id in _as_list(ctx.option("ingredients"))}


def _log_decisions(ctx: BuildContext, steps: list[dict[str, Any]], verb: str) -> None:
    for step in steps:
        if step["id"] is None:
            log.info("%s: uniform soup of all candidates: score %s", ctx.where, step["score"])
            continue
        log.info(
            "%s: %s '%s' (own score %s): soup score %s -> %s, %d ingredient(s)",
            ctx.where,
            verb,
            step["id"],
            step["individual_score"],
            step["score"],
            "accepted" if step["accepted"] else "rejected",
            step["n_ingredients"],
        )


def _build_greedy(ctx: BuildContext) -> VariantBuild:
    ids = _as_list(ctx.option("ingredients"))
    settings: dict[str, Any] = {
        "accept": ctx.option("accept"),
        "order": ctx.option("order"),
        "seed": ctx.option("seed"),
    }
    evaluate = _evaluator(ctx, ids[0], settings)
    state_dict, steps = greedy_soup(
        _candidates(ctx),
        evaluate,
        accept=settings["accept"],
        order=settings["order"],
        seed=settings["seed"],
    )
    _log_decisions(ctx, steps, "try")
    built = VariantBuild(state_dict, steps=steps, settings=settings)
    _apply_bn_policy(ctx, built, ids[0])
    return built


def _build_pruned(ctx: BuildContext) -> VariantBuild:
    ids = _as_list(ctx.option("ingredients"))
    settings: dict[str, Any] = {}
    evaluate = _evaluator(ctx, ids[0], settings)
    state_dict, steps = pruned_soup(_candidates(ctx), evaluate)
    _log_decisions(ctx, steps, "remove")
    built = VariantBuild(state_dict, steps=steps, settings=settings)
    _apply_bn_policy(ctx, built, ids[0])
    return built


def _single(ctx: BuildContext, key: str) -> str:
    (value,) = _as_list(ctx.option(key))  # exactly one: validated at load
    return value


def _build_wise_ft(ctx: BuildContext) -> VariantBuild:
    base, finetuned = ctx.option("base"), _single(ctx, "finetuned")
    alpha = float(ctx.option("alpha"))
    state_dict = wise_ft(ctx.load(base), ctx.load(finetuned), alpha)
    log.info("%s: (1 - %g) * %s + %g * %s", ctx.where, alpha, base, alpha, finetuned)
    built = VariantBuild(state_dict, settings={"alpha": alpha})
    _apply_bn_policy(ctx, built, base)
    return built


def _build_task_arithmetic(ctx: BuildContext) -> VariantBuild:
    lam = float(ctx.option("lam")) * (-1.0 if ctx.option("negate") else 1.0)
    finetuned = _as_list(ctx.option("finetuned"))
    coeffs = ctx.option("coeffs")
    state_dict = task_arithmetic(
        ctx.load(ctx.option("base")),
        [ctx.load(f) for f in finetuned],
        lam=lam,
        coeffs=None if coeffs is None else list(coeffs),
    )
    settings = {"lam": lam, "coeffs": None if coeffs is None else list(coeffs), "negated": lam < 0}
    return VariantBuild(state_dict, settings=settings)


def _build_ties(ctx: BuildContext) -> VariantBuild:
    finetuned = _as_list(ctx.option("finetuned"))
    keep, lam = float(ctx.option("keep")), float(ctx.option("lam"))
    scope = cast(Literal["global", "per_tensor"], ctx.option("scope"))
    state_dict = ties_merge(
        ctx.load(ctx.option("base")), [ctx.load(f) for f in finetuned], keep, lam, scope
    )
    return VariantBuild(state_dict, settings={"keep": keep, "lam": lam, "scope": scope})


def _build_monosoup(ctx: BuildContext) -> VariantBuild:
    preset_name = ctx.option("preset")  # its settings are the defaults of ctx.option
    preset = MONOSOUP_PRESETS[preset_name] if preset_name is not None else {}
    include_buffers = ctx.option("include_buffers")
    rank_rule = cast(RankRule, ctx.option("rank_rule"))
    R = float(ctx.option("R"))
    min_rel_update = float(ctx.option("min_rel_update"))
    # Where tensors MonoSoup does not edit come from (W1 in the reference code).
    untouched_from = cast(Literal["finetuned", "base"], ctx.option("untouched_from"))
    base = ctx.load(ctx.option("base"))
    finetuned = _single(ctx, "finetuned")
    w1 = ctx.load(finetuned)
    buffers = {name for name, _ in ctx.load_model(finetuned).model.named_buffers()}
    result = monosoup(
        base,
        w1,
        rank_rule,
        R,
        min_rel_update,
        untouched_from=untouched_from,
        include_buffers=include_buffers,
        buffer_names=buffers,
        device=ctx.device,
    )
    settings: dict[str, Any] = {
        "rank_rule": rank_rule,
        "R": R,
        "min_rel_update": min_rel_update,
        "untouched_from": untouched_from,
        "include_buffers": include_buffers,
    }
    settings["preset"] = preset_name
    settings["preset_overridden"] = sorted(k for k in preset if k in ctx.variant.options)
    edited = sum(layer["edited"] for layer in result.layers)
    log.info("%s: %d of %d tensors edited", ctx.where, edited, len(result.layers))
    return VariantBuild(result.variant(ctx.variant.method), layers=result.layers, settings=settings)


#: Every ``variant.method`` of the models config -> the function that builds it.
VARIANT_METHODS: dict[str, Callable[[BuildContext], VariantBuild]] = {
    "uniform": _build_uniform,
    "weighted": _build_uniform,
    "greedy": _build_greedy,
    "pruned": _build_pruned,
    "wise_ft": _build_wise_ft,
    "interpolate": _build_wise_ft,
    "task_arithmetic": _build_task_arithmetic,
    "ties": _build_ties,
    "monosoup": _build_monosoup,
    "highonly": _build_monosoup,
    "lowonly": _build_monosoup,
}


def build_variant_state_dict(
    spec: ModelSpec,
    specs: Mapping[str, ModelSpec],
    *,
    location: ProjectLocation,
    device: torch.device | str = "cpu",
) -> VariantBuild:
    """Build the weights of variant ``spec`` from the entries it references (nothing written).

    Referenced variants are materialised first (:func:`materialise_variant`).

    Raises:
        ConfigError: bad option values (naming the variant), held-out split equal to the test
            split, no head for held-out accuracy.
        MergeError: incompatible or empty ingredients, NaN/inf in the result (naming the variant
            and tensor).
    """
    variant = _variant_of(spec)
    check_variant(f"'{spec.model_id}'", variant)  # a spec built by hand skipped the loader
    method = variant.method
    ctx = BuildContext(spec, specs, location, torch.device(device))
    try:
        built = VARIANT_METHODS[method](ctx)
    except (MergeError, NonFiniteError) as exc:
        if str(exc).startswith("variant '"):
            raise  # already names a variant (a referenced one)
        raise type(exc)(f"{ctx.where}: {exc}") from exc
    check_finite(built.state_dict, where=ctx.where)
    built.ingredients = ctx.ingredients()
    return built


# -- keys and materialisation -----------------------------------------------------------------


def _portable_recipe(spec: ModelSpec, location: ProjectLocation) -> dict[str, Any]:
    """Return ``spec.recipe()`` without absolute paths: a file that exists is identified by its
    digest alone (added by :func:`_identity`), another path relative to the project root."""
    recipe = spec.recipe()
    for name in ("weights", "path"):
        value = recipe.get(name)
        if value is None:
            continue
        path = Path(value)
        if path.is_file():
            del recipe[name]
        elif path.is_absolute() and path.is_relative_to(location.root):
            recipe[name] = path.relative_to(location.root).as_posix()
    return recipe


def _identity(model_id: str, specs: Mapping[str, ModelSpec], location: ProjectLocation) -> Any:
    spec = specs[model_id]
    if spec.is_variant:
        return {"variant_key": variant_key(spec, specs, location=location)}
    out: dict[str, Any] = {"recipe": _portable_recipe(spec, location)}
    for name in ("weights", "path"):
        path = getattr(spec, name)
        if path is not None and Path(path).is_file():
            out[f"{name}_sha256"] = file_digest(Path(path))
    if spec.arch is not None:
        out["arch"] = _identity(spec.arch, specs, location)
    return out


def weights_identity(
    model_id: str, specs: Mapping[str, ModelSpec], *, location: ProjectLocation
) -> Any:
    """Return what identifies entry ``model_id``'s weights by content (JSON-able).

    A variant: its :func:`variant_key`; another entry: its recipe without absolute paths plus the
    SHA-256 of its weights/checkpoint file (and of its ``arch`` entry's). Never sizes or times.
    """
    return _identity(model_id, specs, location)


def variant_key(
    spec: ModelSpec, specs: Mapping[str, ModelSpec], *, location: ProjectLocation
) -> str:
    """Return the digest of everything that determines a variant's weights.

    Hashes the code version, the variant's recipe and, for every referenced entry, its recipe
    and the SHA-256 of its weights/checkpoint file (or, for a referenced variant, its own key).
    Pretrained hub weights are identified by their name and tag. No absolute path enters the
    key (files by digest, other paths relative to the project root), so moving the project root
    re-merges nothing.
    """
    payload: dict[str, Any] = {
        "code_version": MERGING_CODE_VERSION,
        "recipe": _portable_recipe(spec, location),
        "references": {ref: _identity(ref, specs, location) for ref in spec.references()},
    }
    revision = METHOD_REVISIONS.get(spec.variant.method) if spec.variant is not None else None
    if revision is not None:  # only methods whose results changed: the others keep their keys
        payload["method_revision"] = revision
    return json_digest(payload)


def is_materialised(
    spec: ModelSpec, specs: Mapping[str, ModelSpec], *, location: ProjectLocation
) -> bool:
    """Whether ``models/<id>.safetensors`` and ``<id>.json`` both carry the current key."""
    from safetensors import SafetensorError, safe_open

    weights = location.model_weights_file(spec.model_id)
    recipe = location.model_recipe_file(spec.model_id)
    if not (weights.is_file() and recipe.is_file()):
        return False
    try:
        stored = json.loads(recipe.read_text()).get("variant_key")
        with safe_open(str(weights), framework="pt") as f:
            in_weights = (f.metadata() or {}).get("variant_key")
    except (OSError, json.JSONDecodeError, SafetensorError):
        return False
    return stored == in_weights == variant_key(spec, specs, location=location)


def materialise_variant(
    spec: ModelSpec,
    specs: Mapping[str, ModelSpec],
    *,
    location: ProjectLocation,
    device: torch.device | str = "cpu",
    force: bool = False,
) -> Path:
    """Build variant ``spec`` into ``models/<id>.safetensors`` + ``<id>.json``; return the path.

    Skips the build when the stored recipe has the current :func:`variant_key` (unless
    ``force``). Referenced variants are materialised first (never forced). The old recipe file is
    removed before the new weights are written and both are written through
    :func:`~sim_consistency.io.atomic_output`, so a failed build leaves no file a reader takes
    for current.
    """
    from safetensors.torch import save_file

    weights = location.model_weights_file(spec.model_id)
    recipe_file = location.model_recipe_file(spec.model_id)
    key = variant_key(spec, specs, location=location)
    if not force and is_materialised(spec, specs, location=location):
        log.info("%s: up to date (variant key %s…), skipped", weights, key[:10])
        return weights
    start = time.perf_counter()
    method = _variant_of(spec).method
    log.info("variant '%s' (%s): building", spec.model_id, method)
    built = build_variant_state_dict(spec, specs, location=location, device=device)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in built.state_dict.items()}
    digest = state_dict_sha256(tensors)
    recipe_file.unlink(missing_ok=True)
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    with atomic_output(weights, needed=size, what="the variant's weights") as tmp:
        save_file(tensors, str(tmp), metadata={"model_id": spec.model_id, "variant_key": key})
    report = {
        "model_id": spec.model_id,
        "variant_key": key,
        "recipe": spec.recipe(),
        "method": method,
        "ingredients": built.ingredients,
        "weights_sha256": digest,
        "settings": built.settings,
        "steps": built.steps,
        "batchnorm": built.batchnorm,
        "layers": built.layers,
        "code_version": MERGING_CODE_VERSION,
        "seconds": round(time.perf_counter() - start, 3),
    }
    atomic_write_text(recipe_file, json.dumps(report, indent=1, default=str))
    log.info("%s: written (%d tensors, %.1f s)", weights, len(tensors), time.perf_counter() - start)
    return weights
