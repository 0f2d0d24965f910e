"""The combined-vs-single table: each two-model combined probe next to its members' own probes.

``results/linear_probe/combined/combined_vs_single.csv`` (:data:`COMBINED_VS_SINGLE`), rewritten
by the combined-probe stage after every run from all the combined results on disk. One row per
combined result of a *pair* of models (``concat``, ``concat_pca`` or ``ensemble``; sets of
other sizes are left out) whose two members have a single-model result with the same
``hp_slug`` (protocol, seed, validation fraction):

``dataset, combiner, model_set, model_a, model_b, protocol, seed, hp_slug, combined_top1,
top1_a, top1_b, block_a, block_b``

``top1_a``/``top1_b`` are the single-model probes' top-1 on the block each member contributed
(for ``ensemble``, the block of its stored predictions). The analyses stage's ``combined_gap``
step (:mod:`sim_consistency.analysis.combined_gap`) reads it by default: Rep2Rep's
"similarity vs performance gap of combined probes".
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from sim_consistency.io import atomic_output
from sim_consistency.outputs import read_json_record

__all__ = ["COMBINED_VS_SINGLE", "TABLE_COLUMNS", "combined_vs_single", "write_combined_vs_single"]

log = logging.getLogger("sim_consistency.combined_probe")

#: The table's file name, under ``results/linear_probe/combined/``.
COMBINED_VS_SINGLE = "combined_vs_single.csv"

TABLE_COLUMNS: tuple[str, ...] = (
    "dataset", "combiner", "model_set", "model_a", "model_b", "protocol", "seed", "hp_slug",
    "combined_top1", "top1_a", "top1_b", "block_a", "block_b",
)  # fmt: skip


def _single_top1(
    single_root: Path, record: dict[str, Any], model_id: str, read: dict[Path, Any]
) -> float | None:
    """The member's single-model top-1 on the block it contributed, or None if not on disk.

    ``read`` caches the single-model records: every combiner of a pair reads the same ones.
    """
    from sim_consistency.project import dataset_slug

    folder = single_root / dataset_slug(record["dataset"]) / model_id / record["hp_slug"]
    if folder not in read:
        read[folder] = read_json_record(folder / "results.json")
    single = read[folder]
    block = record.get("blocks", {}).get(model_id)
    if single is None or block is None:
        return None
    top1 = single.get("blocks", {}).get(block, {}).get("top1")
    return None if top1 is None else float(top1)


def combined_vs_single(combined_root: Path, single_root: Path) -> pd.DataFrame:
    """Return the table (:data:`TABLE_COLUMNS`) of the pair results under ``combined_root``.

    Args:
        combined_root: ``results/linear_probe/combined``.
        single_root: ``results/linear_probe/single_model``.
    """
    rows = []
    singles: dict[Path, Any] = {}
    for path in sorted(combined_root.glob("*/*/*/*/results.json")):
        record = read_json_record(path)
        if record is None or len(record.get("model_ids", ())) != 2:
            continue
        a, b = record["model_ids"]
        top1_a, top1_b = (_single_top1(single_root, record, m, singles) for m in (a, b))
        if top1_a is None or top1_b is None:
            log.info("%s: a member has no single-model result; left out of the table", path)
            continue
        hp = record.get("hyper_parameters", {})
        rows.append({
            "dataset": record["dataset"], "combiner": record["combiner"],
            "model_set": record["model_set"], "model_a": a, "model_b": b,
            "protocol": hp.get("protocol"), "seed": hp.get("seed"), "hp_slug": record["hp_slug"],
            "combined_top1": float(record["result"]["top1"]), "top1_a": top1_a, "top1_b": top1_b,
            "block_a": record["blocks"][a], "block_b": record["blocks"][b],
        })  # fmt: skip
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def write_combined_vs_single(combined_root: Path, single_root: Path) -> Path | None:
    """Write :data:`COMBINED_VS_SINGLE` under ``combined_root`` (atomically); return its path,
    or None (and remove a stale table) when no pair result has both members' probes."""
    table = combined_vs_single(combined_root, single_root)
    path = combined_root / COMBINED_VS_SINGLE
    if table.empty:
        path.unlink(missing_ok=True)
        return None
    with atomic_output(path, what="combined-vs-single table") as tmp:
        table.to_csv(tmp, index=False)
    return path
