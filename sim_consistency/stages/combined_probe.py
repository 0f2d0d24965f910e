"""Stage: probes of model sets — concatenated features (``concat``, ``concat_pca``) and ensembles.

``python scripts/combined_probe.py --models_config M.json --model_sets S.json --datasets …
[--combiners concat concat_pca ensemble] [--pca_variance 0.99] [--seeds 0 1 2]
[--protocol fast|rep2rep]``

Rep2Rep's ``--mode combined_models --feature_combiner concat|concat_pca|ensemble``, over the
model sets of ``--model_sets`` (:mod:`sim_consistency.config.model_sets`: Rep2Rep's sampling
files as they are, or named sets). Per combiner × dataset × set × seed it writes
``results/linear_probe/combined/<combiner>/<dataset_slug>/<set>/<hp_slug>/``:

* ``concat`` / ``concat_pca`` — a probe (same protocol, search and seeds as
  ``single_model_evaluation``) on the set's features of ``--block`` combined by
  :func:`~sim_consistency.probe.combine.combine_features` (rows aligned by key across models;
  PCA fitted on the train split only). Reads the feature caches.
* ``ensemble`` — no new probe: the members' stored single-model predictions
  (``single_model/<dataset>/<model>/<hp_slug>/test_predictions.npz``, written by
  ``single_model_evaluation`` with the same ``--protocol``/``--seeds``/``--val_proportion``)
  averaged after the softmax: ``p = mean_i softmax(logits_i)``, predicted class ``argmax p``.
  Its ``test_predictions.npz`` stores ``logits = log p`` (so ``softmax(logits) = p``).

Each folder holds ``results.json`` (metrics, the set, the members' input content keys, the
combiner's settings: ``d_concat``, ``n_components``, ``explained_variance``), ``results.csv``
(one tidy row), ``test_predictions.npz`` and, for the probes, ``probe_weights.safetensors``
(block ``combined``: weights on the combined — for ``concat_pca`` the PCA-reduced — features).
Current outputs are reused (content key: the members' inputs, the settings, the code version).
After every run, ``results/linear_probe/combined/combined_vs_single.csv`` is rewritten: each
two-model result next to its members' single-model top-1
(:mod:`sim_consistency.probe.combined_table`), the input of the analyses stage's
``combined_gap`` step.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from sim_consistency.errors import ConfigError
from sim_consistency.io import clean_stale_partial
from sim_consistency.outputs import json_digest, plan_reason, stored_key
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
from sim_consistency.stages._probe_runs import ProbeRuns, read_single_model_result, single_model_dir

__all__ = [
    "COMBINED_CODE_VERSION",
    "MODES",
    "STAGE",
    "CombinedItem",
    "CombinedSettings",
    "main",
    "plan",
    "run_item",
]

log = logging.getLogger("sim_consistency.combined_probe")

#: Bump when a change to the combination code changes the numbers it writes.
COMBINED_CODE_VERSION = "1"

#: ``--combiners`` (:data:`sim_consistency.probe.combine.COMBINERS` plus ``ensemble``; here so
#: that ``--help`` imports no numpy).
MODES: tuple[str, ...] = ("concat", "concat_pca", "ensemble")

_STORED = ("test_predictions.npz", "probe_weights.safetensors")


@dataclass(frozen=True, kw_only=True)
class CombinedSettings(Models, Datasets, ProbeRuns, Device, Threads, Force, Launcher, Wandb):
    """Everything a combined-probe run depends on, validated (picklable)."""

    profile_stage: ClassVar[str] = "combined_probe"

    model_sets: Path = option(
        'model sets JSON: Rep2Rep\'s list of lists of model ids, or {"model_sets": {name: [ids]}}',
        default=None,
        required=True,
    )
    combiners: tuple[str, ...] = option(
        "how each set is combined", default=("concat",), nargs="+", choices=MODES
    )
    pca_variance: float = option(
        "concat_pca: explained-variance fraction kept (Rep2Rep: 0.99)", default=0.99, type=float
    )
    block: str = option("block of every model combined: last or a block name", default="last")
    #: ``{set name: model ids}`` from ``--model_sets`` (filled by :meth:`validated`).
    sets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def validated(self) -> CombinedSettings:
        from sim_consistency.config.model_sets import load_model_sets

        s = super().validated()
        if not 0.0 < s.pca_variance <= 1.0:
            raise ConfigError(f"--pca_variance must be in (0, 1] (got {s.pca_variance}).")
        if s.device not in ("auto", "cpu"):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"--device {s.device}: CUDA is not available; use cpu or auto.")
        path = Path(s.model_sets).resolve()
        sets = load_model_sets(path, s.load_specs())
        return replace(s, model_sets=path, combiners=tuple(dict.fromkeys(s.combiners)), sets=sets)


@dataclass(frozen=True)
class CombinedItem:
    """One results folder to (re)build: one set combined one way on one dataset, one seed."""

    combiner: str
    dataset: str
    set_name: str
    model_ids: tuple[str, ...]
    seed: int
    inputs: tuple[Path, ...]  # feature caches (train, test per model) or members' result dirs
    output_dir: Path
    content_key: str
    reason: str


def output_dir(
    settings: CombinedSettings, combiner: str, dataset: str, name: str, seed: int
) -> Path:
    """``results/linear_probe/combined/<combiner>/<dataset_slug>/<set>/<hp_slug>``."""
    return (
        settings.location.linear_probe / "combined" / combiner / dataset_slug(dataset) / name
        / settings.slug(seed)
    )  # fmt: skip


def _rerun_single(settings: CombinedSettings, dataset: str, model_ids: Sequence[str]) -> str:
    return (
        f"simc evaluate --models_config {settings.models_config} --datasets {dataset} "
        f"--model_key {' '.join(dict.fromkeys(model_ids))} --protocol {settings.protocol} "
        f"--val_proportion {settings.val_proportion:g} --seeds "
        f"{' '.join(map(str, settings.seeds))}"
    )


def _probe_inputs(
    settings: CombinedSettings, dataset: str, model_ids: Sequence[str]
) -> tuple[tuple[Path, ...], list[Any]]:
    from sim_consistency.features import require_cache_attrs

    paths, keys = [], []
    for model_id in model_ids:
        for split in (settings.train_split, settings.test_split):
            path = settings.location.feature_file(dataset, split, model_id)
            keys.append([model_id, split, str(require_cache_attrs(path).get("content_key", ""))])
            paths.append(path)
    return tuple(paths), keys


def _ensemble_inputs(
    settings: CombinedSettings, dataset: str, model_ids: Sequence[str], seed: int
) -> tuple[tuple[Path, ...], list[Any]]:
    paths, keys = [], []
    for model_id in model_ids:
        folder = single_model_dir(settings.location, dataset, model_id, settings.slug(seed))
        record = read_single_model_result(
            folder, needs="the ensemble", rerun=_rerun_single(settings, dataset, model_ids)
        )
        keys.append([model_id, record["content_key"], record["stored_files"]])
        paths.append(folder)
    return tuple(paths), keys


def plan(settings: CombinedSettings) -> list[CombinedItem]:
    """Return the results to (re)build; reads only cache attributes and members' results.json.

    Raises:
        MissingInputError: a feature cache (concat) or a member's single-model result
            (ensemble) is missing; the message names it and the command that makes it.
    """
    from sim_consistency.probe.result_folders import PROBE_CODE_VERSION

    items: list[CombinedItem] = []
    for combiner in settings.combiners:
        for dataset in settings.datasets:
            for name, model_ids in settings.sets.items():
                for seed in settings.seeds:
                    if combiner == "ensemble":
                        inputs, keys = _ensemble_inputs(settings, dataset, model_ids, seed)
                        extra: dict[str, Any] = {}
                    else:
                        inputs, keys = _probe_inputs(settings, dataset, model_ids)
                        extra = {"block": settings.block, "hp": settings.hyper_parameters(seed)}
                        if combiner == "concat_pca":
                            extra["pca_variance"] = settings.pca_variance
                    key = json_digest({
                        "combiner": combiner, "models": list(model_ids), "inputs": keys,
                        "seed": seed, **extra,
                        "code": [PROBE_CODE_VERSION, COMBINED_CODE_VERSION],
                    })  # fmt: skip
                    out = output_dir(settings, combiner, dataset, name, seed)
                    for file in ("results.csv", *_STORED, "results.json"):
                        clean_stale_partial(out / file)
                    stored = stored_key(out / "results.json")
                    reason = plan_reason(out, key, stored, force=settings.force)
                    if reason is None and not (out / _STORED[0]).is_file():
                        reason = "missing"
                    if reason is not None:
                        items.append(
                            CombinedItem(combiner, dataset, name, tuple(model_ids), seed,
                                         inputs, out, key, reason)
                        )  # fmt: skip
    return items


def run_item(settings: CombinedSettings, item: CombinedItem) -> Path:
    """Build one combined result; see :mod:`sim_consistency.probe.combined_eval`."""
    from sim_consistency.probe.combined_eval import evaluate_combined

    return evaluate_combined(settings, item)


def _finish(settings: CombinedSettings, items: list[CombinedItem], report: Any) -> None:
    """Rewrite the combined-vs-single table from every pair result on disk."""
    from sim_consistency.probe.combined_table import write_combined_vs_single

    root = settings.location.linear_probe
    path = write_combined_vs_single(root / "combined", root / "single_model")
    if path is not None:
        print(f"combined_probe: pairs vs their members' single probes in {path}")


STAGE = Stage(
    name="combined_probe",
    settings=CombinedSettings,
    description="Probes of model sets: concatenated features (concat, concat_pca) and ensembles.",
    details="Writes results/linear_probe/combined/<combiner>/<dataset_slug>/<set>/<hp_slug>/ "
    "(results.json, results.csv, test_predictions.npz, probe_weights.safetensors). ensemble "
    "averages the softmax of the members' stored single-model predictions (run "
    "single_model_evaluation first with the same --protocol/--seeds/--val_proportion).",
    examples=(
        "python scripts/combined_probe.py --models_config configs/models/demo.json "
        "--model_sets sets.json --datasets wds/digits --combiners concat concat_pca ensemble",
        "python scripts/combined_probe.py --models_config M.json --model_sets "
        "sampling/top_k/model_sets.json --datasets D.txt --protocol rep2rep",
    ),
    plan=plan,
    run=run_item,
    outputs=lambda item: [item.output_dir / "results.json"],
    label=lambda item: (
        f"{item.combiner}/{dataset_slug(item.dataset)}/{item.set_name}/seed_{item.seed}"
    ),
    output_root=lambda settings: settings.location.linear_probe / "combined",
    finish=_finish,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, plan, probe; print a summary. Returns the exit code."""
    return run_stage(STAGE, argv)
