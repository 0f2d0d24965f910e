"""Stage: linear probes (and head accuracy) of every model on cached features.

``python scripts/single_model_evaluation.py --models_config … --datasets …
[--blocks last|all|<names>] [--seeds 0 1 2] [--protocol fast|rep2rep] [--fewshot_k K]
[--profile rep2rep] [--search simc|rep2rep] [--fewshot_lr LR …] [--fewshot_epochs E]
[--batch_size B] [--regularization weight_decay|L1|L2] [--val_proportion P] [--reg_lambda λ]``
reads ``features/<dataset_slug>/{train,test}/<model_id>.h5`` and writes, per model x dataset x
seed, ``results/linear_probe/single_model/<dataset_slug>/<model_id>/<hp_slug>/``:

* ``results.json`` — every block's metrics, chosen hyper-parameters and validation curve, the
  head's accuracy from cached ``/logits`` (when the head scores the dataset's classes, directly
  or through ``class_index_mask.json`` in the dataset folder), the few-shot sample's keys and the
  validation keys (so the absence of leakage can be checked), the
  input caches' content keys and this output's ``content_key``; every top-1 has Wilson's 95 %
  interval over the test rows (``top1_ci_low``, ``top1_ci_high``; test-set sampling only);
* ``results.csv`` — the same as a tidy table, one row per block (``kind=probe``) plus one for the
  head (``kind=head``), with everything needed to aggregate (dataset, model, metadata, seed,
  protocol, block index and depth fraction);
* ``accuracy_vs_depth.csv`` — with more than one block: block index, name, top-1, balanced acc;
* ``test_predictions.npz`` — per test row its key and label, each probed block's predicted
  label (and the head's), and the deepest probed block's logits; ``probe_weights.safetensors``
  — every probed block's fitted probe. Both are laid out as :mod:`sim_consistency.probe.stored`
  documents; soup metrics (paired comparisons), the ensemble and the transfer stages read them.
  A result folder without them (written before they existed) is rebuilt once.

Our defaults are the fast exact probe, seed 0 and our search; ``--profile rep2rep`` sets
Rep2Rep's (``rep2rep`` protocol, seeds 0 1 2, ``--search rep2rep``) for every flag left unset
(:mod:`sim_consistency.runtime.profiles`). The Rep2Rep flags keep its CLI's names:
``--fewshot_lr`` (the learning rates searched; exactly one with ``--val_proportion 0``),
``--fewshot_epochs``, ``--batch_size``, ``--regularization``, ``--reg_lambda`` (the fixed λ
when ``--val_proportion 0`` turns the search off).

Flow: :func:`plan` reads only the caches' attributes, derives each output's content key (input
content keys + protocol and hyper-parameters + the probe code version;
:mod:`sim_consistency.probe.result_folders`) and keeps outputs that are missing or stale (all
with ``--force``); :func:`run_item` loads one model's train and test
caches once, probes every requested block and writes through
:func:`~sim_consistency.io.atomic_output` (``results.json`` last: it marks completion).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from sim_consistency.errors import ConfigError
from sim_consistency.io import clean_stale_partial
from sim_consistency.project import dataset_slug
from sim_consistency.runtime import (
    Datasets,
    Device,
    Force,
    Launcher,
    Models,
    Profile,
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
    "PROTOCOLS",
    "STAGE",
    "EvaluationSettings",
    "WorkItem",
    "main",
    "plan",
    "run_item",
]

log = logging.getLogger("sim_consistency.single_model_evaluation")

#: The probe protocols (:data:`sim_consistency.probe.linear_probe.PROTOCOLS`; here so that
#: ``--help`` need not import torch).
PROTOCOLS: tuple[str, ...] = ("fast", "rep2rep")

#: The hyper-parameter search rules and Rep2Rep's regularisations
#: (:data:`sim_consistency.probe.linear_probe.SEARCH_RULES`,
#: :data:`sim_consistency.probe.solvers.REGULARIZATIONS`; here so that ``--help`` need not
#: import torch).
SEARCH_RULES: tuple[str, ...] = ("simc", "rep2rep")
REGULARIZATIONS: tuple[str, ...] = ("weight_decay", "L1", "L2")

#: Rep2Rep's learning rates (:data:`sim_consistency.probe.REP2REP_LRS`), its single default
#: rate without a search (its CLI's ``--fewshot_lr`` default) and its default fixed λ.
REP2REP_LRS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)
FIXED_LR = 0.1
FIXED_REG_LAMBDA = 0.2

#: Seeds run when ``--seeds`` is not given: Rep2Rep reports the mean over seeds 0, 1, 2.
DEFAULT_SEEDS: dict[str, tuple[int, ...]] = {"rep2rep": (0, 1, 2), "fast": (0,)}

_OUTPUT_FILES = (
    "test_predictions.npz",
    "probe_weights.safetensors",
    "results.csv",
    "accuracy_vs_depth.csv",
    "results.json",
)


@dataclass(frozen=True, kw_only=True)
class ProbeProtocol(Profile):
    """``--seeds``, ``--protocol``, ``--search``, the splits and ``--profile``: the flags that
    name a probe run's result folder, shared by the stages that train or read single-model
    probes (this one, ``combined_probe``, ``probe_transfer``)."""

    #: The stage under which :data:`~sim_consistency.runtime.profiles.PROFILES` lists what
    #: ``--profile`` sets (each stage names its own).
    profile_stage: ClassVar[str] = "single_model_evaluation"

    seeds: tuple[int, ...] = option(
        "run seeds",
        default=(),
        nargs="+",
        type=int,
        shown_default="0 1 2 for rep2rep as in Rep2Rep, 0 for fast",
    )
    protocol: str = option(
        "probe protocol",
        default=None,
        choices=PROTOCOLS,
        shown_default="fast (ours); rep2rep with --profile rep2rep",
    )
    search: str = option(
        "hyper-parameter search: ours, or exactly Rep2Rep's (its train_test_split validation "
        "split, spans ±4 ±2 ±1, tie rules and random stream)",
        default=None,
        choices=SEARCH_RULES,
        shown_default="simc; rep2rep with --profile rep2rep",
    )
    train_split: str = option("split the probes are trained on", default="train")
    test_split: str = option("split the probes are scored on", default="test")

    def with_defaults(self):
        """Fill the flags left unset: from ``--profile``, else our defaults (idempotent)."""
        from sim_consistency.runtime.profiles import resolve_profile

        return resolve_profile(self, self.profile_stage, {"protocol": "fast", "search": "simc"})

    def with_seeds(self):
        """The seeds given, once each in order, else the protocol's default seeds."""
        return replace(self, seeds=tuple(dict.fromkeys(self.seeds or DEFAULT_SEEDS[self.protocol])))


@dataclass(frozen=True, kw_only=True)
class EvaluationSettings(Models, Datasets, Device, Threads, Force, Launcher, Wandb, ProbeProtocol):
    """Everything a single-model evaluation run depends on, validated (picklable)."""

    blocks: tuple[str, ...] = option(
        "last, all (accuracy vs depth), or block names", default=("last",), nargs="+"
    )
    fewshot_k: int | None = option("k training rows per class", default=None, type=int)
    fewshot_seed: int = option("seed of the few-shot draw", default=0, type=int)
    val_proportion: float = option(
        "validation fraction of train, in [0, 1); 0: no search (--reg_lambda, one --fewshot_lr)",
        default=0.2,
        type=float,
    )
    lrs: tuple[float, ...] = option(
        "rep2rep: learning rates searched (exactly one with --val_proportion 0)",
        default=(),
        flag="--fewshot_lr",
        nargs="+",
        type=float,
        shown_default="0.1 0.01 0.001 0.0001; 0.1 with --val_proportion 0",
    )
    epochs: int = option("rep2rep: training epochs", default=20, flag="--fewshot_epochs", type=int)
    batch_size: int = option("rep2rep: rows per training step", default=1024, type=int)
    regularization: str = option(
        "rep2rep: AdamW weight decay, or an L1/L2 penalty on W in the loss",
        default="weight_decay",
        choices=REGULARIZATIONS,
    )
    reg_lambda: float | None = option(
        "the fixed λ (weight decay) with --val_proportion 0",
        default=None,
        type=float,
        shown_default=f"{FIXED_REG_LAMBDA} as in Rep2Rep",
    )
    #: Each model's free-form config metadata (role, run_group, …): it labels result rows and
    #: never changes a number, so an edit refreshes the tables without recomputing.
    model_metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def validated(self) -> EvaluationSettings:
        s = super().validated().with_defaults()
        if s.fewshot_k is not None and s.fewshot_k < 1:
            raise ConfigError(f"--fewshot_k must be a positive integer (got {s.fewshot_k}).")
        s = _check_probe_flags(s)
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
            s.with_seeds(), model_metadata={m: dict(specs[m].metadata) for m in s.model_ids}
        )

    def metadata_of(self, model_id: str) -> dict[str, Any] | None:
        """Return ``model_id``'s current config metadata (``None``: unknown, use the cache's)."""
        if model_id not in self.model_metadata:
            return None
        return json.loads(json.dumps(dict(self.model_metadata[model_id]), default=str))

    def hyper_parameters(self, seed: int) -> dict[str, Any]:
        """Return the protocol settings that determine one seed's numbers (for the key)."""
        from sim_consistency.probe.result_folders import probe_hyper_parameters

        return probe_hyper_parameters(self, seed)


def _check_probe_flags(s: EvaluationSettings) -> EvaluationSettings:
    """Validate the Rep2Rep probe flags against the protocol; fill the learning rates and λ."""
    import math

    def bad(message: str) -> ConfigError:
        return ConfigError(f"{message} (protocol {s.protocol}).")

    if not 0.0 <= s.val_proportion < 1.0:
        raise ConfigError(
            f"--val_proportion must be in [0, 1) (got {s.val_proportion}); 0 turns the search off."
        )
    if s.epochs < 1:
        raise ConfigError(f"--fewshot_epochs must be a positive integer (got {s.epochs}).")
    if s.batch_size < 1:
        raise ConfigError(f"--batch_size must be a positive integer (got {s.batch_size}).")
    bad_lrs = [lr for lr in s.lrs if not (math.isfinite(lr) and lr > 0)]
    if bad_lrs:
        raise ConfigError(f"--fewshot_lr: learning rates must be positive numbers (got {bad_lrs}).")
    if s.protocol == "fast":
        if s.lrs:
            raise bad("--fewshot_lr applies to --protocol rep2rep; the fast probe has no lr")
        if s.regularization != "weight_decay":
            raise bad(
                f"--regularization {s.regularization} needs --protocol rep2rep; the fast probe's "
                "weight decay is already an L2 penalty on W"
            )
    if s.reg_lambda is not None and s.val_proportion > 0:
        raise ConfigError(
            f"--reg_lambda {s.reg_lambda} is used only with --val_proportion 0 (no search); with "
            f"--val_proportion {s.val_proportion} λ is searched."
        )
    reg_lambda = s.reg_lambda
    lrs = s.lrs or REP2REP_LRS
    if s.val_proportion == 0:
        reg_lambda = FIXED_REG_LAMBDA if reg_lambda is None else reg_lambda
        if not (math.isfinite(reg_lambda) and reg_lambda >= 0):
            raise ConfigError(f"--reg_lambda must be a number >= 0 (got {reg_lambda}).")
        if s.protocol == "fast" and reg_lambda == 0:
            raise bad("--reg_lambda must be > 0: the fast probe needs a penalty")
        lrs = s.lrs or (FIXED_LR,)
        if s.protocol == "rep2rep" and len(lrs) != 1:
            raise bad(
                f"--val_proportion 0 trains once: give exactly one --fewshot_lr (got "
                f"{' '.join(map(str, lrs))})"
            )
    return replace(s, lrs=tuple(lrs) if s.protocol == "rep2rep" else (), reg_lambda=reg_lambda)


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


def _output_dir(settings: EvaluationSettings, dataset: str, model_id: str, seed: int) -> Path:
    from sim_consistency.probe.result_folders import hp_slug

    slug = hp_slug(
        settings.protocol,
        seed,
        val_proportion=settings.val_proportion,
        fewshot_k=settings.fewshot_k,
        fewshot_seed=settings.fewshot_seed,
        search=settings.search,
        regularization=settings.regularization,
        reg_lambda=settings.reg_lambda,
        lr=settings.lrs[0] if settings.val_proportion == 0 and settings.lrs else None,
    )
    return settings.location.linear_probe / "single_model" / dataset_slug(dataset) / model_id / slug


def plan(settings: EvaluationSettings) -> list[WorkItem]:
    """Return the results to (re)build; reads only cache attributes (no features).

    Raises:
        MissingInputError: a train or test cache does not exist (names the file).
    """
    from sim_consistency.features import require_cache_attrs
    from sim_consistency.probe.result_folders import probe_content_key, result_reason

    settings = settings.with_defaults()  # settings built in code may skip validated()
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
                key = probe_content_key(keys[0], keys[1], settings.hyper_parameters(seed))
                current = settings.metadata_of(model_id)
                reason = result_reason(out, key, metadata=current, force=settings.force)
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
        "python scripts/single_model_evaluation.py --models_config M.json --datasets D.txt "
        "--profile rep2rep",
        "python scripts/single_model_evaluation.py --models_config M.json --datasets D.txt "
        "--protocol rep2rep --val_proportion 0 --fewshot_lr 0.01 --reg_lambda 0.001",
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
