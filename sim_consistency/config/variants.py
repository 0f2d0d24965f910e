"""Variant entries of the models config: one spec class per merge method.

Every ``variant.method`` has a :class:`MethodSpec` subclass that declares its keys (type, allowed
values, default, meaning) in the shared constraint table of :mod:`sim_consistency.config.schema`,
plus the checks that involve several keys (one weight per ingredient, ``bn_policy: "reset"``
needs ``bn_split``, the held-out split differs from the test split, …). The models-config loader
runs them for every variant entry, so a bad value (``ties.keep = "lots"``, ``monosoup.R = -3``)
is reported at load time with the entry, key, value and what is allowed — not hours later in a
job. The variant builder (:mod:`sim_consistency.merging.build`) reads the resolved values
(:meth:`MethodSpec.settings`: defaults and MonoSoup presets filled in) and re-runs the same
check on specs built by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal, get_args

from sim_consistency.config.schema import (
    Key,
    boolean,
    check_keys,
    choice,
    entry_id,
    entry_ids,
    integer,
    number,
    numbers,
    split_ref,
)
from sim_consistency.errors import ConfigError

__all__ = [
    "BN_POLICIES",
    "METHOD_SPECS",
    "MONOSOUP_PRESETS",
    "MethodSpec",
    "RANK_RULES",
    "RankRule",
    "VARIANT_METHOD_KEYS",
    "VariantSpec",
    "check_variant",
    "freeze",
    "thaw",
    "parse_variant",
]

#: BatchNorm policies of the averaging methods (:mod:`sim_consistency.merging.batchnorm`).
BN_POLICIES: tuple[str, ...] = ("average", "from_anchor", "reset")
#: MonoSoup's rank rules (``"freevariance"`` is an alias of ``"vetterli"``).
RankRule = Literal["variance", "vetterli", "freevariance"]
RANK_RULES: tuple[str, ...] = get_args(RankRule)
#: MonoSoup settings of the reference scripts, picked by ``"preset"``; explicit keys override.
MONOSOUP_PRESETS: dict[str, dict[str, Any]] = {
    "clip": {"rank_rule": "freevariance", "R": 0.8, "min_rel_update": 1e-6},  # MonoSoup.py
    # Convnext_freevariance_vetterli.py
    "convnext": {"rank_rule": "vetterli", "R": 0.9, "min_rel_update": 1e-2},
    "convnext_cka": {"rank_rule": "vetterli", "R": 0.8, "min_rel_update": 1e-2},  # CKA_ConvNext.py
}
#: Keys that name other entries (resolved and checked for cycles by the loader).
REFERENCE_KEYS = ("ingredients", "base", "finetuned", "anchor")


def _keys(*keys: Key) -> dict[str, Key]:
    return {k.name: k for k in keys}


_INGREDIENTS = _keys(
    entry_ids("ingredients", required=True, doc="the entries averaged (list of ids)"),
)
_BN = _keys(
    choice("bn_policy", BN_POLICIES, "average", doc="BatchNorm running statistics of the result"),
    split_ref("bn_split", nullable=True, doc="split the statistics are recomputed on (`reset`)"),
    integer("bn_max_samples", low=1, nullable=True, doc="rows of `bn_split` used (default all)"),
    entry_id("anchor", nullable=True, doc="`from_anchor`: entry whose statistics are copied"),
)
_SELECTION = _keys(
    split_ref("heldout", required=True, doc="split that scores candidate soups"),
    integer("heldout_max_samples", low=1, nullable=True, doc="class-stratified subset of it"),
    split_ref("test", nullable=True, doc="test split, must differ (default `<dataset>:test`)"),
    choice("metric", ("accuracy",), "accuracy", doc="held-out score"),
)
_BASE_FINETUNED = _keys(
    entry_id("base", required=True, doc="the pre-trained (zero-shot) entry"),
)


class MethodSpec:
    """The parameters of one merge method; subclasses declare ``KEYS`` and cross-key checks."""

    METHOD: ClassVar[str] = ""
    KEYS: ClassVar[dict[str, Key]] = {}
    DOC: ClassVar[str] = ""

    @classmethod
    def check(cls, where: str, options: Mapping[str, Any], problems: list[str]) -> None:
        """Append every problem of ``options`` (the ``variant`` object minus ``method``)."""
        n_before = len(problems)
        check_keys(where, options, cls.KEYS, problems, prefix="variant.")
        if len(problems) == n_before:  # cross-key checks need valid single values
            cls.check_together(where, options, problems)

    @classmethod
    def check_together(cls, where: str, options: Mapping[str, Any], problems: list[str]) -> None:
        """Checks that involve several keys (values are individually valid here)."""

    @classmethod
    def defaults(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """The default of every key (a subclass may derive them from other keys)."""
        return {name: key.default for name, key in cls.KEYS.items()}

    @classmethod
    def settings(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        """Every key's value: the option when given (and not null), else its default."""
        out = cls.defaults(options)
        out.update({k: v for k, v in options.items() if v is not None})
        return out


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


class _Averaging(MethodSpec):
    """Averaging methods: the BatchNorm policy applies to the result."""

    @classmethod
    def check_together(cls, where: str, options: Mapping[str, Any], problems: list[str]) -> None:
        if options.get("bn_policy") == "reset" and options.get("bn_split") is None:
            problems.append(
                f"{where}: variant.bn_policy 'reset' needs variant.bn_split, the '<dataset>:<split>' on which "
                "running statistics are recomputed (e.g. 'wds/digits:train')."
            )


class UniformSpec(_Averaging):
    METHOD = "uniform"
    DOC = "Uniform soup: the mean of the ingredients (optionally weighted)."
    KEYS = {
        **_INGREDIENTS,
        **_keys(numbers("weights", nullable=True, doc="one weight per ingredient (normalised)")),
        **_BN,
    }

    @classmethod
    def check_together(cls, where: str, options: Mapping[str, Any], problems: list[str]) -> None:
        super().check_together(where, options, problems)
        weights = options.get("weights")
        if weights is None:
            return
        n = len(_listed(options["ingredients"]))
        if len(weights) != n:
            problems.append(
                f"{where}: variant.weights must give one number per ingredient ({n} ingredient(s), "
                f"got {len(weights)} weights: {list(weights)!r})."
            )
        elif sum(weights) == 0:
            problems.append(f"{where}: variant.weights must not sum to 0 (got {list(weights)!r}).")


class WeightedSpec(UniformSpec):
    METHOD = "weighted"
    DOC = "Weighted soup: `Σ w_i θ_i / Σ w_i`."
    KEYS = {
        **UniformSpec.KEYS,
        "weights": numbers("weights", required=True, doc="one per ingredient"),
    }


class _Selection(_Averaging):
    """Methods that pick ingredients by held-out accuracy."""

    @classmethod
    def check_together(cls, where: str, options: Mapping[str, Any], problems: list[str]) -> None:
        super().check_together(where, options, problems)
        heldout = options["heldout"]
        test = options.get("test") or f"{heldout.rsplit(':', 1)[0]}:test"
        if test == heldout:
            problems.append(
                f"{where}: variant.heldout {heldout!r} equals the test split; selecting ingredients on "
                "the test split overfits it. Use e.g. 'wds/digits:val'."
            )


class GreedySpec(_Selection):
    METHOD = "greedy"
    DOC = "Greedy soup (Wortsman et al. 2022, Recipe 1)."
    KEYS = {
        **_INGREDIENTS,
        **_SELECTION,
        **_keys(
            choice("accept", (">=", ">"), ">=", doc="a candidate joins when its score is …"),
            choice("order", ("sorted", "random"), "sorted", doc="order candidates are tried in"),
            integer("seed", 0, low=0, doc="shuffle seed of `order: random`"),
        ),
        **_BN,
    }


class PrunedSpec(_Selection):
    METHOD = "pruned"
    DOC = "Pruned soup: start from all, remove the worst while the score improves."
    KEYS = {**_INGREDIENTS, **_SELECTION, **_BN}


class WiseFtSpec(_Averaging):
    METHOD = "wise_ft"
    DOC = "WiSE-FT: `(1 − alpha) · base + alpha · finetuned`."
    KEYS = {
        **_BASE_FINETUNED,
        **_keys(
            entry_ids("finetuned", single=True, required=True, doc="the fine-tuned entry"),
            number("alpha", 0.5, doc="mixing weight; outside [0, 1] extrapolates"),
        ),
        **_BN,
    }


class InterpolateSpec(WiseFtSpec):
    METHOD = "interpolate"
    DOC = "Linear interpolation between two entries (WiSE-FT with a required alpha)."
    KEYS = {**WiseFtSpec.KEYS, "alpha": number("alpha", required=True, doc="mixing weight")}


class TaskArithmeticSpec(MethodSpec):
    METHOD = "task_arithmetic"
    DOC = "Task arithmetic: `base + lam · Σ coeffs_i (finetuned_i − base)`."
    KEYS = {
        **_BASE_FINETUNED,
        **_keys(
            entry_ids("finetuned", required=True, doc="fine-tuned entries (id or list)"),
            number("lam", 1.0, doc="scaling λ"),
            numbers(
                "coeffs", nullable=True, doc="one coefficient per fine-tuned entry (default 1)"
            ),
            boolean("negate", False, doc="multiply λ by −1 (forgetting)"),
        ),
    }

    @classmethod
    def check_together(cls, where: str, options: Mapping[str, Any], problems: list[str]) -> None:
        coeffs = options.get("coeffs")
        n = len(_listed(options["finetuned"]))
        if coeffs is not None and len(coeffs) != n:
            problems.append(
                f"{where}: variant.coeffs must give one number per fine-tuned entry ({n} entr(ies), "
                f"got {len(coeffs)} coeffs: {list(coeffs)!r})."
            )


class TiesSpec(MethodSpec):
    METHOD = "ties"
    DOC = "TIES-merging (Yadav et al. 2023): trim, elect sign, disjoint mean."
    KEYS = {
        **_BASE_FINETUNED,
        **_keys(
            entry_ids("finetuned", required=True, doc="fine-tuned entries (id or list)"),
            number("keep", 0.2, low=0, high=1, low_open=True, doc="fraction of entries kept"),
            number("lam", 1.0, doc="scaling λ of the merged task vector"),
            choice("scope", ("global", "per_tensor"), "global", doc="where `keep` is applied"),
        ),
    }


class MonoSoupSpec(MethodSpec):
    METHOD = "monosoup"
    DOC = (
        "MonoSoup: spectral re-mix of one fine-tuned model's update (highonly/lowonly: ablations)."
    )
    KEYS = {
        **_BASE_FINETUNED,
        **_keys(
            entry_ids("finetuned", single=True, required=True, doc="the fine-tuned entry"),
            choice(
                "preset",
                tuple(MONOSOUP_PRESETS),
                nullable=True,
                doc="a reference script's settings; explicit keys override",
            ),
            choice("rank_rule", RANK_RULES, "vetterli", doc="how many directions are 'high'"),
            number("R", 0.8, low=0, high=1, low_open=True, doc="energy threshold (`variance`)"),
            number("min_rel_update", 1e-6, low=0, doc="tensors with a smaller update are kept"),
            choice(
                "untouched_from",
                ("finetuned", "base"),
                "finetuned",
                doc="where unedited tensors come from",
            ),
            boolean("include_buffers", False, doc="also edit ≥ 2-D float buffers"),
        ),
    }

    @classmethod
    def defaults(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        out = super().defaults(options)
        preset = options.get("preset")
        if preset is not None:
            out.update(MONOSOUP_PRESETS[preset])
        return out


class HighOnlySpec(MonoSoupSpec):
    METHOD = "highonly"
    DOC = "MonoSoup ablation: `base + ΔW_high`."


class LowOnlySpec(MonoSoupSpec):
    METHOD = "lowonly"
    DOC = "MonoSoup ablation: `base + ΔW_low`."


#: ``variant.method`` -> its spec class.
METHOD_SPECS: dict[str, type[MethodSpec]] = {
    spec.METHOD: spec
    for spec in (
        UniformSpec,
        WeightedSpec,
        GreedySpec,
        PrunedSpec,
        WiseFtSpec,
        TaskArithmeticSpec,
        TiesSpec,
        MonoSoupSpec,
        HighOnlySpec,
        LowOnlySpec,
        InterpolateSpec,
    )
}
#: Allowed keys per variant method (besides ``method``).
VARIANT_METHOD_KEYS: dict[str, frozenset[str]] = {
    method: frozenset(spec.KEYS) for method, spec in METHOD_SPECS.items()
}


def freeze(value: Any) -> Any:
    """Turn JSON containers into immutable ones (dict -> mappingproxy, list -> tuple)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Inverse of :func:`freeze`: back to plain JSON types (for recipes and hashing)."""
    from pathlib import Path

    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass(frozen=True)
class VariantSpec:
    """A model built from other entries by a merge method (soup, MonoSoup, WiSE-FT, …).

    Attributes:
        method: one of :data:`METHOD_SPECS`.
        options: every other key of the ``variant`` object, frozen (references included), as
            given: defaults are not filled in, so the recipe (and the variant key) is the file's.
    """

    method: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def references(self) -> tuple[str, ...]:
        """Return the ids of the entries this variant is built from, in config order."""
        refs: list[str] = []
        for key in REFERENCE_KEYS:
            value = self.options.get(key)
            if isinstance(value, str):
                refs.append(value)
            elif isinstance(value, tuple):
                refs.extend(v for v in value if isinstance(v, str))
        return tuple(dict.fromkeys(refs))

    def settings(self) -> dict[str, Any]:
        """Every parameter of the method: given values, else defaults (MonoSoup presets)."""
        return METHOD_SPECS[self.method].settings(thaw(self.options))

    def to_json(self) -> dict[str, Any]:
        """Return the variant as plain JSON (the recipe written next to its outputs)."""
        return {"method": self.method, **thaw(self.options)}


def parse_variant(where: str, variant: Any, problems: list[str]) -> VariantSpec | None:
    """Validate a ``variant`` object; append every problem (``where`` names the entry)."""
    if not isinstance(variant, dict):
        problems.append(f"{where}: 'variant' must be an object with a 'method' (got {variant!r}).")
        return None
    method_key = choice("method", tuple(METHOD_SPECS))
    message = method_key.problem(where, variant.get("method"), "variant.")
    if message is not None:
        problems.append(message)
        return None
    spec = METHOD_SPECS[variant["method"]]
    options = {k: v for k, v in variant.items() if k != "method"}
    n_before = len(problems)
    spec.check(where, options, problems)
    if len(problems) > n_before:
        return None
    return VariantSpec(method=variant["method"], options=freeze(options))


def check_variant(where: str, variant: VariantSpec) -> None:
    """Raise :class:`ConfigError` listing every problem of a (hand-built) ``variant``."""
    problems: list[str] = []
    parse_variant(where, variant.to_json(), problems)
    if problems:
        raise ConfigError("\n".join(problems))
