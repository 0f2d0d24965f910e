"""Stage: Rep2Rep consistency of model×model similarity matrices across datasets.

``python scripts/consistency.py --models_config … --datasets A B … --similarity_config
configs/similarity/<name>.json [--set_a KEY=VALUE …] [--set_b KEY=VALUE …]`` reads
``model_similarities/<dataset_slug>/<metric_slug>/`` of every dataset and writes, for every
metric, ``results/consistency/<metric_slug>/<restriction>/`` with

* ``consistency_pearson.csv`` and ``consistency_spearman.csv`` — the D×D tables: the correlation
  of the strict upper triangles of two datasets' matrices (models intersected and aligned by
  id), or of the entries of the chosen model pairs;
* ``heatmap_pearson.png|.pdf`` and ``heatmap_spearman.png|.pdf`` — annotated viridis heatmaps;
* ``uncertainty_pearson.csv`` and ``uncertainty_spearman.csv`` — one row per pair of datasets:
  the correlation (bitwise the table's entry), its Mantel permutation p-value (models permuted,
  one-sided, ``--n_permutations``), its bootstrap-over-models 95 % interval (``--n_bootstrap``),
  ``resolved`` (p < 0.05 and the interval excludes 0); both seeded by ``--ci_seed``. The
  heatmaps hatch the tested cells that are not resolved. ``--n_permutations 0 --n_bootstrap 0``
  turns both off (then no file and no hatching). Under ``--set_a/--set_b`` the models are
  permuted and resampled only within their model-set stratum (see
  :mod:`sim_consistency.uncertainty.mantel`; ``note`` says when that leaves no p-value or
  interval);
* ``summary.csv`` — mean, median, std, min, max of the off-diagonal entries, per method;
* ``metadata.json`` — datasets, models, pairs, the input matrices' point content keys (a
  matrix written with ``--ci`` counts by the key of its point numbers, so a ``--ci`` rerun of
  the matrices leaves these tables current) and the content key the planner compares to skip
  finished outputs (written last; removed first on rebuild).

``<restriction>`` is ``all_pairs``, or ``<set_a>__vs__<set_b>`` for a model-set-pair restriction
by model metadata (e.g. ``--set_a objective=supervised architecture_class=cnn --set_b
objective=clip``: pairs a ∈ A, b ∈ B, a ≠ b; at least 3 pairs).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sim_consistency.errors import ConfigError, MissingInputError
from sim_consistency.io import atomic_write_text
from sim_consistency.outputs import METADATA_FILE, folder_plan_reason, json_digest, stored_key
from sim_consistency.runtime import (
    Datasets,
    Force,
    Launcher,
    Models,
    Stage,
    Threads,
    Wandb,
    option,
    run_stage,
)
from sim_consistency.stages._similarity_flags import SimilarityMetrics
from sim_consistency.stages._similarity_io import (
    SIMILARITY_CODE_VERSION,
    read_similarity_matrix,
    save_heatmap,
    similarity_folder,
    write_json,
)

if TYPE_CHECKING:
    import pandas as pd


__all__ = [
    "STAGE",
    "ConsistencySettings",
    "WorkItem",
    "main",
    "parse_model_set",
    "plan",
    "restriction_name",
    "run_item",
]

log = logging.getLogger("sim_consistency.consistency")

METHODS: tuple[Literal["pearson", "spearman"], ...] = ("pearson", "spearman")
SUMMARY_CSV = "summary.csv"
OUTPUT_FILES = (SUMMARY_CSV, *(f"consistency_{m}.csv" for m in METHODS))
UNCERTAINTY_FILES = tuple(f"uncertainty_{m}.csv" for m in METHODS)
#: Nominal coverage of the bootstrap-over-models interval.
CI_LEVEL = 0.95


@dataclass(frozen=True, kw_only=True)
class ConsistencySettings(Models, Datasets, Threads, Force, Launcher, Wandb, SimilarityMetrics):
    """Everything a run depends on; :meth:`validated` loads the metrics and the model sets."""

    set_a: tuple[Any, ...] = option(
        "restrict to model pairs (a, b), a matching these metadata fields …",
        default=(),
        nargs="+",
        metavar="KEY=VALUE",
        shown_default="all pairs",
    )
    set_b: tuple[Any, ...] = option(
        "… and b matching these", default=(), nargs="+", metavar="KEY=VALUE",
        shown_default="same as --set_a",
    )  # fmt: skip
    n_permutations: int = option(
        "Mantel permutations (models permuted) per pair of datasets, for the p-value of each "
        "consistency; 0: no test",
        default=999,
        type=int,
    )
    n_bootstrap: int = option(
        "bootstrap-over-models replicates per pair of datasets, for the 95%% interval of each "
        "consistency; 0: no interval",
        default=1000,
        type=int,
    )
    ci_seed: int = option(
        "seed of the permutations and bootstrap draws", default=0, type=int, shown_default="0"
    )
    #: Filled in by :meth:`validated`: each model's config metadata.
    model_metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def validated(self) -> ConsistencySettings:
        s = super().validated()
        if len(s.datasets) < 2:
            raise ConfigError(
                f"--datasets: consistency compares at least 2 datasets (got {list(s.datasets)})."
            )
        for flag, value, least in (
            ("--n_permutations", s.n_permutations, 1),
            ("--n_bootstrap", s.n_bootstrap, 10),
        ):
            if value != 0 and value < least:
                raise ConfigError(f"{flag}: 0 (off) or at least {least} (got {value}).")
        if s.set_b and not s.set_a:
            raise ConfigError("--set_b needs --set_a (the first model set of the pairs).")
        set_a = parse_model_set("--set_a", s.set_a)
        specs = s.load_specs()
        return replace(
            s,
            model_metadata={m: dict(specs[m].metadata) for m in s.model_ids},
            set_a=set_a,
            set_b=parse_model_set("--set_b", s.set_b) if s.set_b else set_a,
        )


@dataclass(frozen=True)
class WorkItem:
    """One metric: the datasets' matrix folders to read and the tables to write."""

    slug: str
    datasets: tuple[str, ...]
    matrix_folders: tuple[Path, ...]
    input_keys: tuple[str, ...]
    model_ids: tuple[str, ...]
    model_pairs: tuple[tuple[str, str], ...] | None
    restriction: str
    folder: Path
    content_key: str
    reason: str  # "missing" | "stale" | "forced"
    #: The restriction's two model sets (ids of A, ids of B); None for all pairs.
    model_sets: tuple[tuple[str, ...], tuple[str, ...]] | None = None


def parse_model_set(flag: str, values: Sequence[Any]) -> tuple[tuple[str, str], ...]:
    """Return ``KEY=VALUE`` filters as sorted (key, value) pairs (raises ConfigError).

    Values already parsed into ``(key, value)`` pairs are kept.
    """
    pairs = []
    for value in values:
        if isinstance(value, tuple):
            pairs.append(value)
            continue
        key, sep, wanted = value.partition("=")
        if not sep or not key or not wanted:
            raise ConfigError(
                f"{flag}: expected KEY=VALUE model metadata filters, e.g. objective=supervised "
                f"(got {value!r})."
            )
        pairs.append((key, wanted))
    return tuple(sorted(pairs))


def restriction_name(set_a: Sequence[tuple[str, str]], set_b: Sequence[tuple[str, str]]) -> str:
    """Return the folder name of a restriction: ``all_pairs`` or ``<set_a>__vs__<set_b>``."""
    if not set_a:
        return "all_pairs"

    def fmt(filters: Sequence[tuple[str, str]]) -> str:
        return "+".join(f"{k}={v}" for k, v in filters)

    return f"{fmt(set_a)}__vs__{fmt(set_b)}"


def _restricted_pairs(settings: ConsistencySettings) -> list[tuple[str, str]] | None:
    """Return the model pairs of the restriction, or ``None`` for all pairs."""
    from sim_consistency.similarity import model_set_pairs

    if not settings.set_a:
        return None
    return model_set_pairs(_metadata(settings), dict(settings.set_a), dict(settings.set_b))


def _metadata(settings: ConsistencySettings) -> dict[str, Mapping[str, Any]]:
    return {m: settings.model_metadata.get(m, {}) for m in settings.model_ids}


def _model_sets(
    settings: ConsistencySettings,
) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """Return the ids of the restriction's model sets A and B, or ``None`` for all pairs."""
    from sim_consistency.similarity import model_set_members

    if not settings.set_a:
        return None
    meta = _metadata(settings)
    return (
        tuple(model_set_members(meta, dict(settings.set_a))),
        tuple(model_set_members(meta, dict(settings.set_b))),
    )


def plan(settings: ConsistencySettings) -> list[WorkItem]:
    """Return one work item per metric whose tables are missing or stale (all with force)."""
    from sim_consistency.similarity import metric_slug

    loc = settings.location
    pairs = _restricted_pairs(settings)
    restriction = restriction_name(settings.set_a, settings.set_b)
    items: list[WorkItem] = []
    for spec in settings.metrics:
        slug = metric_slug(spec)
        folders = tuple(similarity_folder(loc, d, spec) for d in settings.datasets)
        keys = []
        for folder in folders:
            key = matrix_point_key(folder)
            if key is None:
                raise MissingInputError(
                    f"{folder}: no complete similarity matrix (no {METADATA_FILE}); run "
                    "scripts/distance_matrix_computation.py with this metric and dataset first."
                )
            keys.append(key)
        folder = loc.consistency / slug / restriction
        key = json_digest(
            {
                "inputs": [list(p) for p in zip(settings.datasets, keys, strict=True)],
                "model_ids": list(settings.model_ids),
                "pairs": None if pairs is None else [list(p) for p in pairs],
                "code_version": SIMILARITY_CODE_VERSION,
                "uncertainty": uncertainty_settings(settings),
            }
        )
        files = OUTPUT_FILES + (UNCERTAINTY_FILES if uncertainty_on(settings) else ())
        reason = folder_plan_reason(folder, key, files, settings.force)
        if reason is None:
            continue
        items.append(
            WorkItem(
                slug=slug,
                datasets=settings.datasets,
                matrix_folders=folders,
                input_keys=tuple(keys),
                model_ids=settings.model_ids,
                model_pairs=None if pairs is None else tuple(pairs),
                restriction=restriction,
                folder=folder,
                content_key=key,
                reason=reason,
                model_sets=_model_sets(settings),
            )
        )
    return items


def matrix_point_key(folder: Path) -> str | None:
    """Return the key of a matrix folder's *point* numbers (None: no complete matrix).

    A matrix written with ``--ci`` records the key it would have without intervals
    (``point_content_key``; its matrix is bitwise that run's), so a ``--ci`` rerun of the
    matrices leaves the consistency tables current; a plain matrix's own key is that key.
    """
    from sim_consistency.stages._similarity_ci import POINT_KEY

    if stored_key(folder) is None:
        return None
    return stored_key(folder, key=POINT_KEY) or stored_key(folder)


def uncertainty_on(settings: ConsistencySettings) -> bool:
    """Whether the Mantel test or the bootstrap interval is computed."""
    return bool(settings.n_permutations or settings.n_bootstrap)


def uncertainty_settings(settings: ConsistencySettings) -> dict[str, Any] | None:
    """The settings of the p-values and intervals (part of the content key), None when off."""
    if not uncertainty_on(settings):
        return None
    restricted = {}
    if settings.set_a:
        restricted["restriction"] = (
            "models permuted and resampled only within their model-set stratum (in A only, "
            "in B only, in both), the permutations that map the restricted pairs onto "
            "themselves; p-value NaN when no model can move, interval NaN when a stratum has "
            "one model (the row's note says so)"
        )
    return {
        "p_value": "Mantel permutation test (Mantel 1967), models permuted (rows and columns "
        "together), one-sided (greater), p = (1 + #{r_perm >= r}) / (1 + n_permutations)",
        "n_permutations": settings.n_permutations,
        "interval": "percentile bootstrap over models (Efron & Tibshirani 1993); pairs of a "
        "model with its own copy dropped",
        "n_bootstrap": settings.n_bootstrap,
        "level": CI_LEVEL,
        "seed": settings.ci_seed,
        "resolved": "p_value < 0.05 and the interval excludes 0; heatmap cells not resolved "
        "are hatched",
        **restricted,
    }


def run_item(settings: ConsistencySettings, item: WorkItem) -> Path:
    """Compute the consistency tables of one metric and write them; return the folder."""
    import pandas as pd

    from sim_consistency.similarity import consistency, consistency_summary
    from sim_consistency.threads import threads_metadata
    from sim_consistency.uncertainty import consistency_tests

    (item.folder / METADATA_FILE).unlink(missing_ok=True)
    wanted = set(item.model_ids)
    matrices: dict[str, pd.DataFrame] = {}
    for dataset, folder in zip(item.datasets, item.matrix_folders, strict=True):
        frame = read_similarity_matrix(folder)
        keep = [m for m in frame.index if m in wanted]
        matrices[dataset] = frame.loc[keep, keep]
    summary_rows = []
    unresolved: dict[str, int] = {}
    for method in METHODS:
        table = consistency(matrices, method=method, model_pairs=item.model_pairs)
        atomic_write_text(
            item.folder / f"consistency_{method}.csv", table.to_csv(index_label="dataset")
        )
        hatch = None
        (item.folder / f"uncertainty_{method}.csv").unlink(missing_ok=True)
        if uncertainty_on(settings):
            tests = consistency_tests(
                matrices,
                method,
                model_pairs=item.model_pairs,
                model_sets=item.model_sets,
                n_permutations=settings.n_permutations,
                n_bootstrap=settings.n_bootstrap,
                level=CI_LEVEL,
                seed=settings.ci_seed,
            )
            atomic_write_text(item.folder / f"uncertainty_{method}.csv", tests.to_csv(index=False))
            hatch = _unresolved_cells(table, tests)
            unresolved[method] = int((tests["tested"] & ~tests["resolved"]).sum())
        save_heatmap(
            table.to_numpy(),
            item.folder / f"heatmap_{method}",
            row_labels=list(table.index),
            col_labels=list(table.columns),
            title=f"{method} consistency, {item.slug} ({item.restriction})",
            vmin=-1.0,
            vmax=1.0,
            hatch=hatch,
            hatch_label="hatched: Mantel p ≥ 0.05 or 95% CI includes 0",
        )
        summary_rows.append({"method": method, **consistency_summary(table)})
    atomic_write_text(item.folder / SUMMARY_CSV, pd.DataFrame(summary_rows).to_csv(index=False))
    write_json(
        item.folder / METADATA_FILE,
        {
            "content_key": item.content_key,
            "metric_slug": item.slug,
            "datasets": list(item.datasets),
            "restriction": item.restriction,
            "model_ids": list(item.model_ids),
            "models_per_dataset": {d: list(f.index) for d, f in matrices.items()},
            "model_pairs": None
            if item.model_pairs is None
            else [list(p) for p in item.model_pairs],
            "input_content_keys": dict(zip(item.datasets, item.input_keys, strict=True)),
            "estimator": "Pearson and Spearman (average ranks) correlation of the strict upper "
            "triangles (or chosen model pairs) of the datasets' model×model matrices, models "
            "intersected by id; NaN pairs left out (Ciernik et al. 2025)",
            "summary": summary_rows,
            "uncertainty": uncertainty_settings(settings),
            "unresolved_pairs": unresolved,
            "code_version": SIMILARITY_CODE_VERSION,
            **threads_metadata(),
        },
    )
    log.info("%s: %d datasets (%s)", item.folder, len(item.datasets), item.reason)
    return item.folder


def _unresolved_cells(table: pd.DataFrame, tests: pd.DataFrame) -> Any:
    """Boolean (D, D) mask of the tested cells whose consistency is not resolved."""
    import numpy as np

    names = list(table.index)
    mask = np.zeros((len(names), len(names)), dtype=bool)
    for r in tests.itertuples(index=False):
        i, j = names.index(r.dataset_a), names.index(r.dataset_b)
        mask[i, j] = mask[j, i] = r.tested and not r.resolved
    return mask


STAGE = Stage(
    name="consistency",
    settings=ConsistencySettings,
    description="Rep2Rep consistency of model×model similarity matrices across datasets.",
    details="Writes results/consistency/<metric_slug>/<restriction>/: Pearson and Spearman "
    "tables, heatmaps, summary.csv and metadata.json; up-to-date folders are reused.",
    examples=(
        "python scripts/consistency.py --models_config configs/models/demo.json "
        "--datasets wds/digits wds/digits_noisy --similarity_config default",
        "python scripts/consistency.py --models_config M.json --datasets D.txt "
        "--similarity_config default --set_a objective=supervised --set_b objective=clip",
    ),
    plan=plan,
    run=run_item,
    outputs=lambda item: [item.folder],
    label=lambda item: item.slug,
    output_root=lambda settings: settings.location.consistency,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, plan, compute (locally or on SLURM); print a summary. Returns the exit code."""
    return run_stage(STAGE, argv)
