"""A single-model probe result folder: its name, its content key and when it is current.

The ``single_model_evaluation`` stage (:mod:`sim_consistency.stages.single_model_evaluation`)
plans one folder per model, dataset and seed:
``results/linear_probe/single_model/<dataset_slug>/<model_id>/<hp_slug>/``. Its name
(:func:`hp_slug`) depends only on the settings that change the numbers; its content key
(:func:`probe_content_key`) on the input caches' keys, the hyper-parameters
(:func:`probe_hyper_parameters`) and :data:`PROBE_CODE_VERSION`; :func:`result_reason` decides
whether it is rebuilt, only relabelled (model metadata changed) or reused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim_consistency.outputs import json_digest, plan_reason, read_json_record
from sim_consistency.probe.linear_probe import REP2REP_LRS, WEIGHT_DECAY_GRID
from sim_consistency.probe.stored import PREDICTIONS_FILE, WEIGHTS_FILE

if TYPE_CHECKING:
    from sim_consistency.stages.single_model_evaluation import EvaluationSettings

__all__ = [
    "PROBE_CODE_VERSION",
    "RESULTS_FILE",
    "hp_slug",
    "probe_content_key",
    "probe_hyper_parameters",
    "result_reason",
]

log = logging.getLogger("sim_consistency.single_model_evaluation")

#: Bump when a change to the probe code changes the numbers it writes.
# 3: custom L-BFGS for the fast protocol; 4: class-major layout; 5: centred basis.
PROBE_CODE_VERSION = "6"
#: Written last: it marks a complete folder and holds its content key.
RESULTS_FILE = "results.json"


def hp_slug(
    protocol: str, seed: int, *, val_proportion: float = 0.2, fewshot_k: int | None = None,
    fewshot_seed: int = 0, search: str = "simc", regularization: str = "weight_decay",
    reg_lambda: float | None = None, lr: float | None = None,
) -> str:  # fmt: skip
    """Return the results folder name of one run, e.g. ``fast_val_0.2_seed_0``.

    Few-shot runs add ``_fewshot_<k>_fsseed_<s>``; Rep2Rep's search ``_search_rep2rep``; an
    L1/L2 penalty ``_reg_<L1|L2>``; a run without search (``val_proportion`` 0) its fixed
    ``_lambda_<λ>`` (and ``_lr_<lr>``). The output folder depends only on the settings that
    change the numbers.
    """
    slug = f"{protocol}_val_{val_proportion:g}"
    if val_proportion == 0:
        slug += f"_lambda_{reg_lambda:g}" + (f"_lr_{lr:g}" if lr is not None else "")
    elif search != "simc":
        slug += f"_search_{search}"
    if regularization != "weight_decay":
        slug += f"_reg_{regularization}"
    if fewshot_k is not None:
        slug += f"_fewshot_{fewshot_k}_fsseed_{fewshot_seed}"
    return f"{slug}_seed_{seed}"


def _non_default_hp(s: EvaluationSettings) -> dict[str, Any]:
    """The hyper-parameters whose default is left out of the content key (keeps old keys)."""
    hp: dict[str, Any] = {}
    if s.search != "simc":
        hp["search"] = s.search
    if s.regularization != "weight_decay":
        hp["regularization"] = s.regularization
    if s.val_proportion == 0:
        hp["reg_lambda"] = s.reg_lambda
    return hp


def probe_hyper_parameters(s: EvaluationSettings, seed: int) -> dict[str, Any]:
    """Return the protocol settings that determine one seed's numbers (for the content key)."""
    hp: dict[str, Any] = {
        "protocol": s.protocol,
        **_non_default_hp(s),
        "seed": seed,
        "val_proportion": s.val_proportion,
        "fewshot_k": s.fewshot_k,
        "fewshot_seed": s.fewshot_seed if s.fewshot_k is not None else None,
        "weight_decay_grid": [float(x) for x in WEIGHT_DECAY_GRID],
        "blocks": list(s.blocks),
        "train_split": s.train_split,
        "test_split": s.test_split,
    }
    if s.protocol == "rep2rep":
        lrs = s.lrs or REP2REP_LRS
        hp.update(lrs=list(lrs), epochs=s.epochs, batch_size=s.batch_size)
    return hp


def probe_content_key(train_key: str, test_key: str, hp: dict[str, Any]) -> str:
    """Return a result's content key: its input caches' keys, hyper-parameters, code version."""
    return json_digest({"train": train_key, "test": test_key, "hp": hp, "code": PROBE_CODE_VERSION})


def result_reason(
    folder: Path, key: str, *, metadata: dict[str, Any] | None, force: bool
) -> str | None:
    """Return why ``folder`` must be (re)written, or ``None`` when it is current.

    ``"metadata"``: the numbers are current but the model's config ``metadata`` (which labels
    the rows, never changes a number) differs from the stored one, so the tables are relabelled
    without recomputing. A folder without the stored predictions and weights (written before
    they existed) is rebuilt once.
    """
    record = read_json_record(folder / RESULTS_FILE)
    stored = None if record is None else record.get("content_key")
    complete = all((folder / f).is_file() for f in (PREDICTIONS_FILE, WEIGHTS_FILE))
    if (
        complete
        and stored == key
        and not force
        and record is not None
        and (metadata is not None and record.get("metadata") != metadata)
    ):
        log.info("%s: model metadata changed; relabelling (no recompute)", folder)
        return "metadata"
    return plan_reason(folder, key, stored, force=force, complete=complete)
