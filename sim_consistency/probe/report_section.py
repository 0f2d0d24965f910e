"""The report's section on combined probes, ensembles and probe transfer.

Reads what the combined-probe and transfer stages wrote (``results/linear_probe/combined/`` and
``results/linear_probe/transfer/``), never recomputes; absent when neither stage has run.
"""

from __future__ import annotations

import pandas as pd

from sim_consistency.project import ProjectLocation
from sim_consistency.report import Section, _derived

__all__ = ["combined_and_transfer_section"]


def _csv_rows(paths: list) -> pd.DataFrame | None:
    frames = [pd.read_csv(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else None


def _combined_table(location: ProjectLocation) -> pd.DataFrame | None:
    """Mean over seeds of each combination's top-1, with the members' best single top-1."""
    root = location.linear_probe / "combined"
    rows = _csv_rows(sorted(root.glob("*/*/*/*/results.csv")))
    if rows is None:
        return None
    table = (
        rows.groupby(["dataset", "combiner", "model_set", "model_ids"], sort=True)
        .agg(top1=("top1", "mean"), n_seeds=("seed", "nunique"))
        .reset_index()
    )
    pairs = root / "combined_vs_single.csv"
    if pairs.is_file():
        single = pd.read_csv(pairs)
        single["best_single_top1"] = single[["top1_a", "top1_b"]].max(axis=1)
        best = single.groupby(["dataset", "combiner", "model_set"])["best_single_top1"].mean()
        table = table.join(best, on=["dataset", "combiner", "model_set"])
        table["gain_pp"] = 100 * (table["top1"] - table["best_single_top1"])
    return table


def _transfer_table(location: ProjectLocation) -> pd.DataFrame | None:
    rows = _csv_rows(sorted((location.linear_probe / "transfer").glob("*/*/*/*/results.csv")))
    if rows is None:
        return None
    keys = ["source_dataset", "target_dataset", "model_id"]
    return (
        rows.groupby(keys, sort=True)
        .agg(
            top1=("top1", "mean"), source_top1=("source_top1", "mean"), n_seeds=("seed", "nunique")
        )
        .reset_index()
    )


def combined_and_transfer_section(location: ProjectLocation) -> Section | None:
    """Return the section, or None when no combined or transfer result exists."""
    combined, transfer = _combined_table(location), _transfer_table(location)
    if combined is None and transfer is None:
        return None
    section = Section(
        "Combined probes, ensembles and probe transfer",
        "Probes on several models' features: concatenated (concat), concatenated and "
        "PCA-reduced on the train split (concat_pca), and the post-softmax average of the "
        "members' stored probe predictions (ensemble); gain = combined top-1 − the better member's "
        "own probe (pairs only). Transfer: a probe trained on one dataset scored on another "
        "through a class map (ImageNet-A/-R/V2/Sketch/ObjectNet). Mean over probe seeds. "
        "Computed by scripts/combined_probe.py and scripts/probe_transfer.py.",
    )
    if combined is not None:
        section.tables.append(_derived(location, "combined_probes", combined))
        if "gain_pp" in combined.columns:
            for combiner, part in combined.dropna(subset=["gain_pp"]).groupby("combiner"):
                best = part.loc[part["gain_pp"].idxmax()]
                section.findings.append(
                    f"{combiner}: mean gain over the better member {part['gain_pp'].mean():+.2f} "
                    f"pp over {len(part)} pair result(s); largest {best['gain_pp']:+.2f} pp "
                    f"({best['model_ids']} on {best['dataset']})."
                )
    if transfer is not None:
        section.tables.append(_derived(location, "probe_transfer", transfer))
        for (source, target), part in transfer.groupby(["source_dataset", "target_dataset"]):
            drop = 100 * (part["source_top1"] - part["top1"]).mean()
            section.findings.append(
                f"{source} → {target}: mean top-1 {part['top1'].mean():.4f} over "
                f"{len(part)} model(s), {drop:+.2f} pp below the source's own test top-1."
            )
    return section
