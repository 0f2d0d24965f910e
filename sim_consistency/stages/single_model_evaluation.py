"""Stage: linear probes (and head accuracy) of every model on cached features.

``python scripts/single_model_evaluation.py --models_config … --datasets …
[--blocks last|all|<names>] [--seeds 0 1 2] [--protocol fast|rep2rep] [--fewshot_k K]``
reads ``features/<dataset_slug>/{train,test}/<model_id>.h5`` and writes, per model x dataset x
seed, ``results/linear_probe/single_model/<dataset_slug>/<model_id>/<hp_slug>/``:

* ``results.json`` — every block's metrics, chosen hyper-parameters and validation curve, the
  head's accuracy from cached ``/logits`` (when the head scores the dataset's classes, directly
  or through ``class_index_mask.json`` in the dataset folder), the few-shot sample's keys and the
  validation keys (so the absence of leakage can be checked), the
  input caches' content keys and this output's ``content_key``;
* ``results.csv`` — the same as a tidy table, one row per block (``kind=probe``) plus one for the
  head (``kind=head``), with everything needed to aggregate (dataset, model, metadata, seed,
  protocol, block index and depth fraction);
* ``accuracy_vs_depth.csv`` — with more than one block: block index, name, top-1, balanced acc;
* ``probe_weights.safetensors`` (every probed block's fitted probe) and ``test_predictions.npz``
  (keys, targets, logits, pred, classes of the deepest probed block), laid out as
  :mod:`sim_consistency.probe.stored` documents; the ensemble and transfer stages read them.

Flow: :func:`plan` reads only the caches' attributes, derives each output's content key (input
content keys + protocol and hyper-parameters + :data:`PROBE_CODE_VERSION`) and keeps outputs that
are missing or stale (all with ``--force``); :func:`run_item` loads one model's train and test
caches once, probes every requested block and writes through
:func:`~sim_consistency.io.atomic_output` (``results.json`` last: it marks completion).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim_consistency.errors import ConfigError
from sim_consistency.io import clean_stale_partial
from sim_consistency.outputs import json_digest, plan_reason, read_json_record
from sim_consistency.project import dataset_slug
from sim_consistency.runtime import (
    Datasets,
    Device,
    Force,
    Launcher,
    Models,
    Stage,
    Threads,
    Wandb,
    option,
    run_stage,
)

if TYPE_CHECKING:
    from sim_consistency.launch import LaunchReport
    from sim_consistency.tracking import Tracker

__all__ = [
    "DEFAULT_SEEDS",
    "PROBE_CODE_VERSION",
    "PROTOCOLS",
    "STAGE",
    "EvaluationSettings",
    "WorkItem",
    "hp_slug",
    "main",
    "plan",
    "run_item",
]

log = logging.getLogger("sim_consistency.single_model_evaluation")

#: Bump when a change to the probe code changes the numbers it writes.
# 3: custom L-BFGS for the fast protocol; 4: class-major layout; 5: centred basis.
PROBE_CODE_VERSION = "6"

#: The probe protocols (:data:`sim_consistency.probe.linear_probe.PROTOCOLS`; here so that
#: ``--help`` need not import torch).
PROTOCOLS: tuple[str, ...] = ("fast", "rep2rep")

#: Seeds run when ``--seeds`` is not given: Rep2Rep reports the mean over seeds 0, 1, 2.
DEFAULT_SEEDS: dict[str, tuple[int, ...]] = {"rep2rep": (0, 1, 2), "fast": (0,)}

_STORED_FILES = ("probe_weights.safetensors", "test_predictions.npz")
_OUTPUT_FILES = ("results.csv", "accuracy_vs_depth.csv", *_STORED_FILES, "results.json")


@dataclass(frozen=True, kw_only=True)
class EvaluationSettings(Models, Datasets, Device, Threads, Force, Launcher, Wandb):
    """Everything a single-model evaluation run depends on, validated (picklable)."""

    blocks: tuple[str, ...] = option(
        "last, all (accuracy vs depth), or block names", default=("last",), nargs="+"
    )
    seeds: tuple[int, ...] = option(
        "run seeds",
        default=(),
        nargs="+",
        type=int,
        shown_default="0 1 2 for rep2rep as in Rep2Rep, 0 for fast",
    )
    protocol: str = option("probe protocol", default="fast", choices=PROTOCOLS)
    fewshot_k: int | None = option("k training rows per class", default=None, type=int)
    fewshot_seed: int = option("seed of the few-shot draw", default=0, type=int)
    val_proportion: float = option("validation fraction of train", default=0.2, type=float)
    train_split: str = option("split the probes are trained on", default="train")
    test_split: str = option("split the probes are scored on", default="test")
    epochs: int = 20
    batch_size: int = 1024
    #: Each model's free-form config metadata (role, run_group, …): it labels result rows and
    #: never changes a number, so an edit refreshes the tables without recomputing.
    model_metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def validated(self) -> EvaluationSettings:
        s = super().validated()
        if s.fewshot_k is not None and s.fewshot_k < 1:
            raise ConfigError(f"--fewshot_k must be a positive integer (got {s.fewshot_k}).")
        if not 0.0 < s.val_proportion < 1.0:
            raise ConfigError(f"--val_proportion must be in (0, 1) (got {s.val_proportion}).")
        if len(s.blocks) > 1 and ({"last", "all"} & set(s.blocks)):
            raise ConfigError(
                f"--blocks: 'last' and 'all' cannot be combined with other names (got {s.blocks})."
            )
        if s.device not in ("auto", "cpu"):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"--device {s.device}: CUDA is not available; use cpu or auto.")
        specs = s.load_specs()
        return replace(
            s,
            seeds=tuple(dict.fromkeys(s.seeds or DEFAULT_SEEDS[s.protocol])),
            model_metadata={m: dict(specs[m].metadata) for m in s.model_ids},
        )

    def metadata_of(self, model_id: str) -> dict[str, Any] | None:
        """Return ``model_id``'s current config metadata (``None``: unknown, use the cache's)."""
        if model_id not in self.model_metadata:
            return None
        return json.loads(json.dumps(dict(self.model_metadata[model_id]), default=str))

    def hyper_parameters(self, seed: int) -> dict[str, Any]:
        """Return the protocol settings that determine one seed's numbers (for the key)."""
        from sim_consistency.probe import REP2REP_LRS, WEIGHT_DECAY_GRID

        hp: dict[str, Any] = {
            "protocol": self.protocol,
            "seed": seed,
            "val_proportion": self.val_proportion,
            "fewshot_k": self.fewshot_k,
            "fewshot_seed": self.fewshot_seed if self.fewshot_k is not None else None,
            "weight_decay_grid": [float(x) for x in WEIGHT_DECAY_GRID],
            "blocks": list(self.blocks),
            "train_split": self.train_split,
            "test_split": self.test_split,
        }
        if self.protocol == "rep2rep":
            hp.update(lrs=list(REP2REP_LRS), epochs=self.epochs, batch_size=self.batch_size)
        return hp


@dataclass(frozen=True)
class WorkItem:
    """One results folder to (re)build: one model on one dataset with one seed."""

    model_id: str
    dataset: str
    seed: int
    train_file: Path
    test_file: Path
    output_dir: Path
    content_key: str
    reason: str  # "missing" | "stale" | "forced" | "metadata" (relabel, no recompute)


def hp_slug(
    protocol: str, seed: int, *, val_proportion: float = 0.2, fewshot_k: int | None = None,
    fewshot_seed: int = 0,
) -> str:  # fmt: skip
    """Return the results folder name of one run, e.g. ``fast_val_0.2_seed_0``.

    Few-shot runs add ``_fewshot_<k>_fsseed_<s>``; the output folder depends only on the
    settings that change the numbers.
    """
    slug = f"{protocol}_val_{val_proportion:g}"
    if fewshot_k is not None:
        slug += f"_fewshot_{fewshot_k}_fsseed_{fewshot_seed}"
    return f"{slug}_seed_{seed}"


def _output_dir(settings: EvaluationSettings, dataset: str, model_id: str, seed: int) -> Path:
    slug = hp_slug(
        settings.protocol,
        seed,
        val_proportion=settings.val_proportion,
        fewshot_k=settings.fewshot_k,
        fewshot_seed=settings.fewshot_seed,
    )
    return settings.location.linear_probe / "single_model" / dataset_slug(dataset) / model_id / slug


def _content_key(train_key: str, test_key: str, hp: dict[str, Any]) -> str:
    return json_digest({"train": train_key, "test": test_key, "hp": hp, "code": PROBE_CODE_VERSION})


def plan(settings: EvaluationSettings) -> list[WorkItem]:
    """Return the results to (re)build; reads only cache attributes (no features).

    Raises:
        MissingInputError: a train or test cache does not exist (names the file).
    """
    from sim_consistency.features import require_cache_attrs

    items: list[WorkItem] = []
    loc = settings.location
    for dataset in settings.datasets:
        for model_id in settings.model_ids:
            train_file = loc.feature_file(dataset, settings.train_split, model_id)
            test_file = loc.feature_file(dataset, settings.test_split, model_id)
            keys = []
            for path in (train_file, test_file):
                attrs = require_cache_attrs(path)
                keys.append(str(attrs.get("content_key", "")))
            for seed in settings.seeds:
                out = _output_dir(settings, dataset, model_id, seed)
                for name in _OUTPUT_FILES:  # a killed run's leftovers, whatever the verdict
                    clean_stale_partial(out / name)
                key = _content_key(keys[0], keys[1], settings.hyper_parameters(seed))
                record = read_json_record(out / "results.json")
                stored = None if record is None else record.get("content_key")
                current = settings.metadata_of(model_id)
                if (
                    stored == key
                    and not settings.force
                    and record is not None
                    and (current is not None and record.get("metadata") != current)
                ):
                    reason: str | None = "metadata"
                    log.info("%s: model metadata changed; relabelling (no recompute)", out)
                else:
                    reason = plan_reason(out, key, stored, force=settings.force)
                if reason is None and not all((out / f).is_file() for f in _STORED_FILES):
                    reason = "missing"  # a result from before probes were stored
                if reason is None:
                    continue
                items.append(
                    WorkItem(model_id, dataset, seed, train_file, test_file, out, key, reason)
                )
    return items


def run_item(settings: EvaluationSettings, item: WorkItem) -> Path:
    """Probe one item (or relabel it); see :func:`sim_consistency.probe.evaluation.evaluate_item`."""
    from sim_consistency.probe.evaluation import evaluate_item

    return evaluate_item(settings, item)


def _track(
    tracker: Tracker, settings: EvaluationSettings, items: list[WorkItem], report: LaunchReport
) -> None:
    tracker.log_metrics({"n_results": len(report.results()), "n_failed": report.n_failed})
    tracker.log_table(
        "results",
        [
            {
                "model_id": i.model_id,
                "dataset": i.dataset,
                "seed": i.seed,
                "results": str(i.output_dir / "results.json"),
            }
            for i in items
        ],
    )


STAGE = Stage(
    name="single_model_evaluation",
    settings=EvaluationSettings,
    description="Linear probes (and head accuracy) of every model on cached features.",
    details="Writes results/linear_probe/single_model/<dataset_slug>/<model_id>/<hp_slug>/ "
    "(results.json, results.csv, accuracy_vs_depth.csv, probe_weights.safetensors, "
    "test_predictions.npz); current results are reused.",
    examples=(
        "python scripts/single_model_evaluation.py --models_config configs/models/demo.json "
        "--datasets wds/digits --seeds 0 1 2",
        "python scripts/single_model_evaluation.py --models_config M.json --datasets D.txt "
        "--blocks all --protocol rep2rep --fewshot_k 10",
    ),
    plan=plan,
    run=run_item,
    outputs=lambda item: [item.output_dir / "results.json"],
    label=lambda item: f"{item.model_id}/{dataset_slug(item.dataset)}/seed_{item.seed}",
    output_root=lambda settings: settings.location.linear_probe / "single_model",
    track=_track,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, plan, probe; print a summary. Returns the exit code."""
    return run_stage(STAGE, argv)
