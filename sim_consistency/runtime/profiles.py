"""Named profiles: one switch (``--profile NAME``) that sets several flags of several stages.

A profile only fills flags the user left unset: every flag it touches has no fixed default in
the stage (``None`` or an empty tuple until :func:`resolve_profile`), so an explicit flag
always wins over the profile, and the profile over our own default.

``rep2rep`` — what Rep2Rep (``lciernik/similarity_consistency``) does by default:

* ``distance_matrix_computation``: similarities on the ``train`` split, restricted to its
  10k subset rule (at most 10 000 rows, at most ``ceil(10000 / C)`` per class, seeded and
  stratified: :func:`sim_consistency.data.stratified_subset`; splits of at most 10 000 rows
  are used whole). CKA is unbiased unless ``--biased_cka`` — Rep2Rep's default and ours.
* ``single_model_evaluation``: the ``rep2rep`` probe protocol, seeds 0 1 2, and Rep2Rep's own
  hyper-parameter search (``--search rep2rep``: its stratified ``train_test_split`` validation
  split, spans ±4 ±2 ±1, tie rules and random stream; see
  :mod:`sim_consistency.probe.linear_probe`).
* ``combined_probe`` and ``probe_transfer``: the same protocol, search and seeds (the combined
  probes are trained that way; the ensemble and the transfer read the single-model results
  written that way).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["PROFILES", "resolve_profile"]

#: ``{profile: {stage name: {settings field: value}}}``.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "rep2rep": {
        "distance_matrix_computation": {"split": "train", "max_samples": 10_000},
        "single_model_evaluation": {
            "protocol": "rep2rep",
            "seeds": (0, 1, 2),
            "search": "rep2rep",
        },
        # Rep2Rep's combined_models mode and the transfer read (or train) probes the same way
        "combined_probe": {"protocol": "rep2rep", "seeds": (0, 1, 2), "search": "rep2rep"},
        "probe_transfer": {"protocol": "rep2rep", "seeds": (0, 1, 2), "search": "rep2rep"},
    },
}

T = TypeVar("T")


def _unset(value: Any) -> bool:
    return value is None or value == ()


def resolve_profile(settings: T, stage: str, ours: Mapping[str, Any]) -> T:
    """Return ``settings`` with every unset field of ``ours`` filled: profile first, then ours.

    Args:
        settings: a stage's settings with a ``profile`` field (``None``: no profile).
        stage: the stage's name (a key of the profile's table).
        ours: our defaults of the fields a profile may set (a value ``None`` stays unset).
    """
    name = getattr(settings, "profile", None)
    table = PROFILES[name].get(stage, {}) if name is not None else {}
    values = {}
    for field in set(ours) | set(table):
        if _unset(getattr(settings, field)):
            values[field] = table.get(field, ours.get(field))
    return dataclasses.replace(settings, **values)  # type: ignore[type-var]
