"""The similarity metric config: ``configs/similarity/*.json`` -> frozen :class:`MetricSpec`.

Format (DESIGN.md, Rep2Rep compatible): a JSON list of objects::

    [{"sim_method": "cka", "sim_kernel": "linear", "unbiased": true},
     {"sim_method": "cka", "sim_kernel": "rbf", "unbiased": true, "sigma": 0.4},
     {"sim_method": "rsa", "rsa_method": "correlation", "corr_method": "spearman"},
     {"sim_method": "mknn", "k": 10}]

Keys: ``sim_method`` (cka | rsa | mknn, required); for cka ``sim_kernel`` (linear | rbf,
default linear), ``unbiased`` (bool; absent means unbiased, Rep2Rep's default, or biased with
``biased_cka=True``, Rep2Rep's ``--biased_cka``), and for rbf exactly one of ``sigma``
(absolute bandwidth) or ``sigma_median`` (σ relative to the median distance; an extension);
for rsa ``rsa_method`` (correlation | cosine, default correlation) and ``corr_method``
(pearson | spearman, default spearman); for mknn ``k`` (default 10). Keys that do not apply to an
entry's method or kernel (Rep2Rep's files carry every key, e.g. ``sigma: 0`` on a linear CKA) are
ignored with one warning naming them. Every problem in the file is reported at once, each line
naming the file and the entry.
"""

from __future__ import annotations

import difflib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from sim_consistency.errors import ConfigError, MissingInputError

__all__ = ["MetricSpec", "load_similarity_config", "parse_similarity_config", "METHOD_KEYS"]

#: Keys that apply to each ``sim_method`` (besides ``sim_method`` itself).
METHOD_KEYS: dict[str, frozenset[str]] = {
    "cka": frozenset({"sim_kernel", "unbiased", "sigma", "sigma_median"}),
    "rsa": frozenset({"rsa_method", "corr_method"}),
    "mknn": frozenset({"k"}),
}
_ALL_KEYS = frozenset({"sim_method"}).union(*METHOD_KEYS.values())


@dataclass(frozen=True)
class MetricSpec:
    """One similarity metric, validated. Fields that do not apply to ``sim_method`` are None."""

    sim_method: Literal["cka", "rsa", "mknn"]
    sim_kernel: Literal["linear", "rbf"] | None = None
    unbiased: bool | None = None
    sigma: float | None = None
    sigma_median: float | None = None
    rsa_method: Literal["correlation", "cosine"] | None = None
    corr_method: Literal["pearson", "spearman"] | None = None
    k: int | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the entry as JSON with the keys that apply (what the metadata records)."""
        keys = {"sim_method"} | METHOD_KEYS[self.sim_method]
        return {key: getattr(self, key) for key in sorted(keys) if getattr(self, key) is not None}


def _choice(
    where: str, key: str, value: Any, choices: tuple[str, ...], problems: list[str]
) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else "."
        problems.append(
            f"{where}: {key} {value!r} is not valid{hint} Choose: {', '.join(choices)}."
        )


def _positive_number(where: str, key: str, value: Any, problems: list[str]) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        problems.append(f"{where}: {key} must be a positive number (got {value!r}).")


def _parse_entry(
    where: str, entry: Any, problems: list[str], notes: list[str], *, biased_cka: bool
) -> MetricSpec | None:
    if not isinstance(entry, dict):
        problems.append(f"{where}: must be an object (got {entry!r}).")
        return None
    for key in sorted(set(entry) - _ALL_KEYS):
        close = difflib.get_close_matches(key, _ALL_KEYS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else "."
        problems.append(
            f"{where}: unknown key '{key}'{hint} Allowed: {', '.join(sorted(_ALL_KEYS))}."
        )
    method = entry.get("sim_method")
    if method not in METHOD_KEYS:
        _choice(where, "sim_method", method, tuple(METHOD_KEYS), problems)
        return None
    ignored = [
        key
        for key in sorted((set(entry) & _ALL_KEYS) - METHOD_KEYS[method] - {"sim_method"})
        if entry[key] is not None
    ]
    n_before = len(problems)
    if method == "cka":
        kernel = entry.get("sim_kernel") or "linear"
        _choice(where, "sim_kernel", kernel, ("linear", "rbf"), problems)
        unbiased = entry.get("unbiased", not biased_cka)
        if not isinstance(unbiased, bool):
            problems.append(f"{where}: unbiased must be true or false (got {unbiased!r}).")
        sigma, sigma_median = entry.get("sigma"), entry.get("sigma_median")
        if kernel == "rbf":
            if (sigma is None) == (sigma_median is None):
                problems.append(
                    f"{where}: the rbf kernel needs exactly one of 'sigma' (absolute, e.g. 0.4) "
                    f"and 'sigma_median' (relative to the median distance) (got sigma={sigma!r}, "
                    f"sigma_median={sigma_median!r})."
                )
            for key, value in (("sigma", sigma), ("sigma_median", sigma_median)):
                if value is not None:
                    _positive_number(where, key, value, problems)
        else:
            ignored += [k for k in ("sigma", "sigma_median") if entry.get(k) is not None]
            sigma = sigma_median = None
        if ignored:
            notes.append(f"{where}: {', '.join(sorted(ignored))}")
        if len(problems) > n_before:
            return None
        return MetricSpec(
            "cka",
            sim_kernel=cast(Literal["linear", "rbf"], kernel),  # checked by _choice
            unbiased=unbiased,
            sigma=float(sigma) if sigma is not None else None,
            sigma_median=float(sigma_median) if sigma_median is not None else None,
        )
    if ignored:
        notes.append(f"{where}: {', '.join(ignored)}")
    if method == "rsa":
        rdm = entry.get("rsa_method") or "correlation"
        corr = entry.get("corr_method") or "spearman"
        _choice(where, "rsa_method", rdm, ("correlation", "cosine"), problems)
        _choice(where, "corr_method", corr, ("pearson", "spearman"), problems)
        return (
            None
            if len(problems) > n_before
            else MetricSpec(
                "rsa",
                rsa_method=cast(Literal["correlation", "cosine"], rdm),  # checked by _choice
                corr_method=cast(Literal["pearson", "spearman"], corr),
            )
        )
    k = entry.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        problems.append(f"{where}: k must be a positive integer (got {k!r}).")
        return None
    return MetricSpec("mknn", k=k)


def parse_similarity_config(
    entries: Any, source: str = "<similarity config>", *, biased_cka: bool = False
) -> list[MetricSpec]:
    """Validate a parsed similarity config (a list of entries) into :class:`MetricSpec` s.

    Args:
        entries: the parsed JSON list.
        source: the file, for messages.
        biased_cka: CKA entries without ``unbiased`` use the biased estimator (Rep2Rep's
            ``--biased_cka``); otherwise they are unbiased, Rep2Rep's default.

    Raises:
        ConfigError: listing every problem, each naming ``source`` and the entry's position.
    """
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            f"{source}: a similarity config is a non-empty JSON list of metric objects "
            f"(got {type(entries).__name__})."
        )
    problems: list[str] = []
    notes: list[str] = []
    specs: list[MetricSpec] = []
    for i, entry in enumerate(entries):
        spec = _parse_entry(f"entry {i}", entry, problems, notes, biased_cka=biased_cka)
        if spec is not None:
            if spec in specs:
                problems.append(f"entry {i}: duplicates an earlier entry ({entry}).")
            specs.append(spec)
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    if notes:
        warnings.warn(
            f"{source}: ignored keys that do not apply to their metric: {'; '.join(notes)}.",
            stacklevel=2,
        )
    return specs


def load_similarity_config(
    path: str | os.PathLike, *, biased_cka: bool = False
) -> list[MetricSpec]:
    """Read and validate ``configs/similarity/<name>.json`` (see :func:`parse_similarity_config`).

    Raises:
        MissingInputError: the file does not exist.
        ConfigError: invalid JSON or entries (every problem at once, naming file and entry).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: similarity config not found (see configs/similarity/).")
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}).") from None
    return parse_similarity_config(entries, str(path), biased_cka=biased_cka)
