"""Plan and run the soup-metrics parts; ``summary.json`` records what each part read.

Each requested part states the inputs it reads (:data:`PART_MODULES`, ``inputs(study,
needs)``), identified by content; its *part key* is their digest. :func:`plan` checks every
input first — a missing or stale one is reported with the command that produces it, for all
parts at once — then keeps the parts whose key differs from the one in ``summary.json`` (all
with ``--force``). So an extraction of an unrelated model, or a rebuilt variant no part reads,
recomputes nothing; a checkpoint whose bytes change (whatever its size and time) recomputes the
parts that read it. An edit of model metadata that only labels models refreshes
``summary.json`` without recomputing (reason ``"metadata"``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from sim_consistency.io import atomic_write_text
from sim_consistency.outputs import json_digest, note_reused
from sim_consistency.stages.soup_metrics import (
    accuracy,
    barriers,
    branching,
    cka,
    monosoup,
    purity,
    weights,
)
from sim_consistency.stages.soup_metrics.inputs import Needs
from sim_consistency.stages.soup_metrics.study import PARTS, SoupMetricsSettings, Study
from sim_consistency.threads import threads_metadata

__all__ = ["PARTS_CODE_VERSION", "PART_MODULES", "WorkItem", "plan", "run", "run_item"]

log = logging.getLogger("sim_consistency.soup_metrics")

#: Every part -> its module (``inputs(study, needs)``, ``run(study)``).
PART_MODULES: dict[str, ModuleType] = {
    "accuracy": accuracy,
    "cka": cka,
    "weights": weights,
    "monosoup": monosoup,
    "barriers": barriers,
    "branching": branching,
    "purity": purity,
}
assert tuple(PART_MODULES) == PARTS

#: Bumped when the stage's outputs change for the same inputs (part of every part key).
# 2: the fast probe's new solver; 3: its class-major layout; 4: its centred basis;
# 5: block CKA's Gram-space U-statistics accumulated without the diagonal (rounding level);
# 6: figure names keep every character of the ids, barrier columns named after their papers;
# 7: parts read upstream outputs (probe results, layer_cka grids, generated variants);
# 8: the fast probe's solver is torch.optim.LBFGS (strong Wolfe).
# 9: soup_vs_ingredients gets paired bootstrap intervals, McNemar and verdicts; the branching
#    verdict comes from a paired bootstrap interval (reads the per-row test predictions).
PARTS_CODE_VERSION = "9"


@dataclass(frozen=True)
class WorkItem:
    """One run of the stage: the parts to (re)compute and why, and every current part key."""

    parts: tuple[str, ...]
    reasons: dict[str, str] = field(default_factory=dict)
    part_keys: dict[str, str] = field(default_factory=dict)
    relabel_only: bool = False
    summary: Path | None = None  # results/soup_metrics/summary.json, written last


def _previous_summary(settings: SoupMetricsSettings) -> dict[str, Any]:
    try:
        value = json.loads((settings.out_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def part_keys(study: Study) -> dict[str, str]:
    """Return ``{part: key}`` of the requested parts that apply to this study.

    Raises:
        MissingInputError: inputs missing or stale, listing the commands that produce them.
    """
    needs = Needs()
    keys = {}
    for name in study.settings.parts:
        inputs = PART_MODULES[name].inputs(study, needs)
        if inputs is not None:
            keys[name] = json_digest({"part": name, "inputs": inputs, "code": PARTS_CODE_VERSION})
    needs.raise_if_any()
    return keys


def plan(settings: SoupMetricsSettings) -> list[WorkItem]:
    """Return the run to do (one item), or nothing when every requested part is current."""
    study = Study(settings)
    keys = part_keys(study)
    previous = _previous_summary(settings)
    stored = previous.get("part_keys") or {}
    reasons = {}
    for name, key in keys.items():
        if settings.force:
            reasons[name] = "forced"
        elif name not in stored:
            reasons[name] = "missing"
        elif stored[name] != key:
            reasons[name] = "stale"
    summary = settings.out_dir / "summary.json"
    if reasons:
        return [WorkItem(tuple(reasons), reasons, keys, summary=summary)]
    if previous.get("model_metadata") != study.model_metadata():
        return [WorkItem((), {"summary": "metadata"}, keys, relabel_only=True, summary=summary)]
    log.info("soup metrics: every requested part is up to date, results reused")
    note_reused(summary)
    return []


def run_item(settings: SoupMetricsSettings, item: WorkItem) -> dict[str, Any]:
    """Run the item's parts; return the summary written to ``summary.json`` (last)."""
    study = Study(settings)
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    previous = _previous_summary(settings)
    if item.relabel_only:
        log.info("soup metrics: model metadata changed; summary relabelled (no recompute)")
        summary = {**previous, "model_metadata": study.model_metadata(), "reason": "metadata"}
        atomic_write_text(settings.out_dir / "summary.json", json.dumps(summary, indent=1))
        return summary
    for name in item.parts:
        log.info("soup metrics: %s (%s)", name, item.reasons[name])
        PART_MODULES[name].run(study)
    kept = {k: v for k, v in (previous.get("part_keys") or {}).items() if k not in settings.parts}
    keys = {**kept, **item.part_keys}
    summary = {
        "inputs_key": json_digest(keys),
        "part_keys": keys,
        "reason": item.reasons,
        "model_metadata": study.model_metadata(),
        "parts": [p for p in PARTS if p in keys],
        "soups": study.soups,
        "base": study.base,
        "datasets": list(settings.datasets),
        "ood_datasets": list(settings.ood_datasets),
        "split": settings.split,
        "estimators": {**(previous.get("estimators") or {}), **_estimators(study, item.parts)},
        "settings": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()
        },
        **threads_metadata(),
    }
    atomic_write_text(settings.out_dir / "summary.json", json.dumps(summary, indent=1, default=str))
    return summary


def _estimators(study: Study, parts: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "accuracy" in parts:
        out.update(accuracy.ESTIMATOR)
    if "cka" in parts:
        out["block_cka"] = cka.estimator(study)
    if "weights" in parts:
        out["weights"] = weights.ESTIMATOR
    if "barriers" in parts:
        out["barriers"] = barriers.estimator(study)
    if "purity" in parts:
        out["purity"] = purity.ESTIMATOR
    return out


def run(settings: SoupMetricsSettings) -> dict[str, Any]:
    """Plan and run in this process (notebooks, tests); return the current summary."""
    items = plan(settings)
    if not items:
        return _previous_summary(settings)
    return run_item(settings, items[0])
