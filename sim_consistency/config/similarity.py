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

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from sim_consistency.config.schema import Key, boolean, check_keys, choice, integer, number
from sim_consistency.config.shipped import shipped_config, shipped_config_dir, shipped_names
from sim_consistency.errors import ConfigError, MissingInputError

__all__ = [
    "METHOD_KEYS",
    "METRIC_KEYS",
    "SIM_METHOD",
    "MetricSpec",
    "load_similarity_config",
    "parse_similarity_config",
    "resolve_similarity_config_path",
]

#: The key every entry has.
SIM_METHOD = choice("sim_method", ("cka", "rsa", "mknn"), required=True, doc="the metric")


def _table(*keys: Key) -> dict[str, Key]:
    return {k.name: k for k in keys}


#: The keys of each ``sim_method`` (besides ``sim_method`` itself), with their constraints.
#: JSON null means the default (Rep2Rep's files carry every key).
METRIC_KEYS: dict[str, dict[str, Key]] = {
    "cka": _table(
        choice("sim_kernel", ("linear", "rbf"), "linear", nullable=True, doc="CKA kernel"),
        boolean(
            "unbiased",
            nullable=True,
            doc="unbiased HSIC (default true; false with `--biased_cka`)",
        ),
        number("sigma", low=0, low_open=True, nullable=True, doc="rbf: absolute bandwidth"),
        number(
            "sigma_median",
            low=0,
            low_open=True,
            nullable=True,
            doc="rbf: bandwidth relative to the median distance",
        ),
    ),
    "rsa": _table(
        choice("rsa_method", ("correlation", "cosine"), "correlation", nullable=True, doc="RDM"),
        choice(
            "corr_method",
            ("pearson", "spearman"),
            "spearman",
            nullable=True,
            doc="correlation of the RDMs",
        ),
    ),
    "mknn": _table(integer("k", 10, low=1, doc="neighbours")),
}
#: Keys that apply to each ``sim_method`` (besides ``sim_method`` itself).
METHOD_KEYS: dict[str, frozenset[str]] = {m: frozenset(t) for m, t in METRIC_KEYS.items()}
_ALL_KEYS = frozenset({"sim_method"}).union(*METHOD_KEYS.values())
_RBF_KEYS = ("sigma", "sigma_median")


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


def _parse_entry(
    where: str, entry: Any, problems: list[str], notes: list[str], *, biased_cka: bool
) -> MetricSpec | None:
    if not isinstance(entry, dict):
        problems.append(f"{where}: must be an object (got {entry!r}).")
        return None
    n_before = len(problems)
    check_keys(where, entry, {}, problems, ignore=_ALL_KEYS)
    method: str = entry.get("sim_method", "")
    message = (
        f"{where}: missing key 'sim_method' ({SIM_METHOD.allowed})."
        if "sim_method" not in entry
        else SIM_METHOD.problem(where, method)
    )
    if message is not None:
        problems.append(message)
        return None
    table = dict(METRIC_KEYS[method])
    rbf = method == "cka" and entry.get("sim_kernel") == "rbf"
    if method == "cka" and not rbf:
        for key in _RBF_KEYS:  # a linear kernel has no bandwidth: ignored like other keys
            del table[key]
    ignored = sorted(k for k in set(entry) & _ALL_KEYS - set(table) - {"sim_method"})
    ignored = [k for k in ignored if entry[k] is not None]
    if ignored:
        notes.append(f"{where}: {', '.join(ignored)}")
    check_keys(where, {k: v for k, v in entry.items() if k in table}, table, problems)
    settings = {name: key.default for name, key in table.items()}
    settings.update({k: v for k, v in entry.items() if k in table and v is not None})
    if rbf and (settings["sigma"] is None) == (settings["sigma_median"] is None):
        problems.append(
            f"{where}: the rbf kernel needs exactly one of 'sigma' (absolute, e.g. 0.4) "
            f"and 'sigma_median' (relative to the median distance) (got "
            f"sigma={entry.get('sigma')!r}, sigma_median={entry.get('sigma_median')!r})."
        )
    if len(problems) > n_before:
        return None
    if method == "cka":
        unbiased = settings["unbiased"]
        return MetricSpec(
            "cka",
            sim_kernel=cast(Literal["linear", "rbf"], settings["sim_kernel"]),
            unbiased=(not biased_cka) if unbiased is None else unbiased,
            sigma=float(settings["sigma"]) if settings.get("sigma") is not None else None,
            sigma_median=(
                float(settings["sigma_median"])
                if settings.get("sigma_median") is not None
                else None
            ),
        )
    if method == "rsa":
        return MetricSpec(
            "rsa",
            rsa_method=cast(Literal["correlation", "cosine"], settings["rsa_method"]),
            corr_method=cast(Literal["pearson", "spearman"], settings["corr_method"]),
        )
    return MetricSpec("mknn", k=settings["k"])


def _check_distinct_slugs(specs: list[MetricSpec], problems: list[str]) -> None:
    """Two entries with one output folder (Rep2Rep names cosine RSA without its correlation)."""
    from sim_consistency.similarity.slugs import metric_slug

    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        slug = metric_slug(spec)
        if slug in seen and specs[seen[slug]] != spec:
            problems.append(
                f"entries {seen[slug]} and {i} would both write model_similarities/<dataset>/"
                f"{slug}/ (Rep2Rep's name; a cosine RSA is named without its corr_method): "
                "keep one of them."
            )
        seen.setdefault(slug, i)


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
    _check_distinct_slugs(specs, problems)
    if problems:
        raise ConfigError("\n".join(f"{source}: {p}" for p in problems))
    if notes:
        warnings.warn(
            f"{source}: ignored keys that do not apply to their metric: {'; '.join(notes)}.",
            stacklevel=2,
        )
    return specs


def resolve_similarity_config_path(value: str | os.PathLike) -> Path:
    """Return the file of ``--similarity_config``: a path, or the name of a shipped config.

    A bare name (no ``/``, no ``.json``: ``default``, ``local_global``) is a file of
    ``configs/similarity/``, installed with the package (so it resolves in a non-editable
    install and in the image too); an existing file of that name wins.

    Raises:
        MissingInputError: no such file, or no shipped config of that name (listing them).
    """
    path = Path(value).expanduser()
    if path.is_file():
        return path
    text = str(value)
    if "/" not in text and os.sep not in text and not text.endswith(".json"):
        named = shipped_config("similarity", text)
        if named.is_file():
            return named
        raise MissingInputError(
            f"--similarity_config {text!r}: no shipped similarity config of that name. Shipped: "
            f"{', '.join(shipped_names('similarity')) or '(none)'} (in "
            f"{shipped_config_dir('similarity')}); or give the path of a JSON file."
        )
    raise MissingInputError(
        f"{path}: similarity config not found. Give the path of a JSON file or the name of a "
        f"shipped one: {', '.join(shipped_names('similarity')) or '(none)'}."
    )


def load_similarity_config(
    path: str | os.PathLike, *, biased_cka: bool = False
) -> list[MetricSpec]:
    """Read and validate a similarity config (see :func:`parse_similarity_config`).

    Args:
        path: a JSON file, or the name of a shipped config (``default``: configs/similarity/
            default.json; :func:`resolve_similarity_config_path`).
        biased_cka: CKA entries without ``unbiased`` use the biased estimator.

    Raises:
        MissingInputError: the file does not exist (or no shipped config has that name).
        ConfigError: invalid JSON or entries (every problem at once, naming file and entry).
    """
    path = resolve_similarity_config_path(path)
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}).") from None
    return parse_similarity_config(entries, str(path), biased_cka=biased_cka)
