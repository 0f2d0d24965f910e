"""``--ci`` for the similarity stages: flags, content-key part, plan rule, metadata (private).

The intervals are delete-a-group jackknife intervals (:mod:`sim_consistency.uncertainty`): the
rows are split into ``--ci_groups`` K disjoint random groups (``row_groups(n, K,
seed=--ci_seed)``), each similarity is recomputed exactly with one group left out from per-group
sufficient statistics, and the interval is ``(point - bias) ± t_{K-1, 0.975} · se``. The point
estimates are the stage's own numbers, bitwise.

Content keys: a run with ``--ci`` has its own key (the plain key's fields plus the interval's
settings), so it recomputes outputs written without intervals. Every output also records the
plain key as ``point_content_key``: a later run *without* ``--ci`` reuses outputs written with
it (their point numbers are bitwise the plain ones; the interval files are extra).

Cheap to import (the stages' ``--help`` path).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim_consistency.errors import ConfigError
from sim_consistency.outputs import METADATA_FILE, folder_plan_reason, stored_key
from sim_consistency.runtime import option
from sim_consistency.runtime.groups import StageSettings

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sim_consistency.config.similarity import MetricSpec
    from sim_consistency.uncertainty import Interval

__all__ = [
    "CI_LEVEL",
    "CiSettings",
    "POINT_KEY",
    "ci_key_fields",
    "ci_metadata",
    "ci_plan_reason",
    "no_interval_reason",
]

#: Nominal coverage of the intervals the stages write.
CI_LEVEL = 0.95
#: Metadata field holding the key of the same outputs without intervals.
POINT_KEY = "point_content_key"


@dataclass(frozen=True, kw_only=True)
class CiSettings(StageSettings):
    """``--ci``, ``--ci_groups``, ``--ci_seed``: jackknife confidence intervals per entry."""

    ci: bool = option(
        "also write a 95%% confidence interval per similarity (delete-a-group jackknife over "
        "row groups; point estimates unchanged). With the default groups linear and RBF CKA "
        "take the intervals from their plain pass (about free at study scale); Spearman RSA "
        "re-ranks per group (3-5x its matrix)",
        default=False,
    )
    ci_groups: int = option(
        "K, the number of jackknife row groups (20 with seed 0 are the plain pass's own "
        "groups; another K or seed costs a second pass)",
        default=20,
        type=int,
    )
    ci_seed: int = option(
        "seed of the random jackknife row groups", default=0, type=int, shown_default="0"
    )

    def validated(self):
        s = super().validated()
        if s.ci_groups < 2:
            raise ConfigError(f"--ci_groups: needs at least 2 groups (got {s.ci_groups}).")
        return s


def ci_key_fields(settings: CiSettings) -> dict[str, Any]:
    """Return the content-key fields of the interval settings (empty without ``--ci``)."""
    if not settings.ci:
        return {}
    return {"ci": {"n_groups": settings.ci_groups, "seed": settings.ci_seed, "level": CI_LEVEL}}


def ci_plan_reason(
    folder: Path,
    key: str,
    point_key: str,
    outputs: Sequence[str],
    *,
    force: bool,
    ci: bool,
) -> str | None:
    """Return why ``folder`` must be rebuilt, or None when current.

    Without ``--ci``, outputs written with ``--ci`` for the same inputs are current too (their
    ``point_content_key`` is this run's key).
    """
    reason = folder_plan_reason(folder, key, outputs, force)
    if reason == "stale" and not ci and stored_key(folder / METADATA_FILE, key=POINT_KEY) == key:
        return None
    return reason


def ci_metadata(interval: Interval, n_rows: int) -> dict[str, Any]:
    """Return ``metadata.json``'s description of the intervals (how to regenerate the groups)."""
    return {
        **interval.to_metadata(),
        "ci_estimator": (
            "delete-a-group jackknife: rows split into K disjoint random groups, each "
            "similarity recomputed exactly with one group left out (from per-group sufficient "
            "statistics); se^2 = (K-1)/K sum_g (theta_g - mean)^2; interval (point - bias) +- "
            "t_{K-1} se with bias = (K-1)(mean - point)"
        ),
        "ci_groups": (
            f"sim_consistency.uncertainty.row_groups({n_rows}, {interval.n_groups}, "
            f"seed={interval.seed}) (also stored as the HDF5 dataset ci_groups)"
        ),
        "ci_centre": "bias-corrected estimate (the point itself may lie outside its interval)",
        "ci_files": {"se": "standard error", "ci_low": "lower bound", "ci_high": "upper bound"},
    }


def no_interval_reason(spec: MetricSpec) -> str | None:
    """Return why ``--ci`` gives no interval for the metric (None: it gives one).

    Mutual k-NN has no exact leave-group-out form from per-group statistics: leaving rows out
    changes every remaining row's neighbour set, so its value is not a function of sums over
    groups, and recomputing k-NN K times would cost K times the metric.
    """
    if spec.sim_method in ("cka", "rsa"):
        return None
    return (
        f"no confidence interval for sim_method {spec.sim_method!r}: leaving rows out changes "
        "the remaining rows' neighbour sets, so there is no exact leave-group-out value from "
        "per-group statistics (recomputing it K times is not done)"
    )
