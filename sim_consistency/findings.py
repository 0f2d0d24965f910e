"""Sentences of the study report, each computed from the result table it describes.

Every function takes the tidy tables the stages wrote and returns plain sentences (or a small
table); nothing here states a conclusion the numbers were not checked for. Comparisons are
worded as observations and carry their resolution: accuracies are counts of correct test images,
so a difference smaller than one image (``1 / n`` of accuracy) cannot be seen and is reported as
"within one test image". Seeds are stated where they exist (probes); a single training run per
model has no spread, so no claim of significance is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "accuracy_findings",
    "barrier_findings",
    "cka_profile_findings",
    "consistency_findings",
    "difference_text",
    "monosoup_findings",
    "monosoup_table",
    "probe_findings",
    "purity_findings",
    "soup_findings",
]


def _pp(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"


def difference_text(difference: float, n: int | None) -> str:
    """Return ``"+0.56 pp (+2 test images)"``, or ``"… within one test image"`` below 1/n."""
    text = f"{100 * difference:+.2f} pp"
    if not n:
        return text
    images = difference * n
    if abs(images) < 1 - 1e-9:
        return f"{text} (within one test image of {n})"
    return f"{text} ({images:+.0f} test image{'s' if abs(round(images)) != 1 else ''} of {n})"


def _resolved(difference: float, n: int | None) -> bool:
    return n is not None and abs(difference * n) >= 1 - 1e-9


def accuracy_findings(accuracy: pd.DataFrame) -> list[str]:
    """Return sentences on the accuracy table: n per dataset and the best model per dataset."""
    out = []
    for dataset, part in accuracy.groupby("dataset", sort=False):
        n = int(part["n_samples"].min()) if "n_samples" in part else None
        ranked = part.sort_values("top1", ascending=False)
        top = ranked.iloc[0]
        ties = ranked[np.isclose(ranked["top1"], top["top1"])]["model_id"].tolist()
        runner = ranked[~ranked["model_id"].isin(ties)]
        sentence = (
            f"{dataset}: {len(part)} models, n = {n} test images (one image = "
            f"{100 / n:.2f} pp). Highest test top-1: {', '.join(ties)} ({_pp(top['top1'])})"
            if n
            else f"{dataset}: {len(part)} models. Highest test top-1: {', '.join(ties)} "
            f"({_pp(top['top1'])})"
        )
        if len(runner):
            gap = float(top["top1"] - runner.iloc[0]["top1"])
            sentence += f", {difference_text(gap, n)} above the next ({runner.iloc[0]['model_id']})"
        out.append(sentence + ".")
    return out


def soup_findings(table: pd.DataFrame, n: Mapping[str, int] | int | None) -> list[str]:
    """Return, per dataset, how many soups beat their mean / best ingredient by ≥ one image."""
    out = []
    for dataset, part in table.groupby("dataset", sort=False):
        n_d = n.get(dataset) if isinstance(n, Mapping) else n
        parts = []
        for column, what in (("improvement_over_mean", "mean"), ("improvement_over_best", "best")):
            values = part[column].to_numpy(dtype=float)
            if n_d:
                above = int(np.sum(values * n_d >= 1 - 1e-9))
                below = int(np.sum(values * n_d <= -(1 - 1e-9)))
                parts.append(
                    f"{above} above and {below} below their {what} ingredient by at least one "
                    f"test image ({len(values) - above - below} within one)"
                )
            else:
                parts.append(f"{int(np.sum(values > 0))} above their {what} ingredient")
        rng = part["improvement_over_best"].to_numpy(dtype=float)
        sentence = (
            f"{dataset}: of {len(part)} soups, {parts[0]}; {parts[1]}. Soup − best ingredient "
            f"ranges {100 * rng.min():+.2f} to {100 * rng.max():+.2f} pp."
        )
        if "over_best_verdict" in part:
            sentence += " " + _verdict_counts(part)
        out.append(sentence)
    return out


def _verdict_counts(part: pd.DataFrame) -> str:
    """How many soups the paired bootstrap intervals support beating their best / mean."""
    said = []
    for what in ("best", "mean"):
        counts = part[f"over_{what}_verdict"].value_counts()
        said.append(
            f"{counts.get('supported', 0)} supported, {counts.get('not supported', 0)} not "
            f"supported, {counts.get('inconclusive', 0)} inconclusive vs the {what} ingredient"
        )
    significant = int((part["mcnemar_p"] < 0.05).sum()) if "mcnemar_p" in part else 0
    return (
        f"Paired 95% bootstrap intervals over test images: {'; '.join(said)}; McNemar's exact "
        f"test soup vs best p < 0.05 for {significant} of {len(part)}."
    )


def monosoup_table(
    accuracy: pd.DataFrame,
    variants: Mapping[str, Mapping[str, str]],
    profile: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Return MonoSoup next to its ablations, base and fine-tuned model, one row per model.

    Args:
        accuracy: ``model_id, dataset, top1`` rows.
        variants: ``{model_id: {"method", "base", "finetuned", "rank_rule"}}`` of every
            MonoSoup / high-only / low-only variant.
        profile: optional layer-CKA diagonal profile (``model_id, cka``) against the base.

    Returns:
        Columns ``family`` (``base → finetuned, rank rule``), ``model_id``, ``role``, one
        top-1 column per dataset and ``mean_block_cka_to_base`` when a profile is given.
    """
    wide = accuracy.pivot_table(index="model_id", columns="dataset", values="top1")
    cka = (
        profile.groupby("model_id")["cka"].mean()
        if profile is not None and not profile.empty
        else pd.Series(dtype=float)
    )
    rows = []
    families: dict[tuple[str, str, str], dict[str, str]] = {}
    for model_id, v in variants.items():
        key = (v["base"], v["finetuned"], v.get("rank_rule") or "default rank rule")
        families.setdefault(key, {})[v["method"]] = model_id
    order = ("monosoup", "highonly", "lowonly")
    for (base, finetuned, rule), members in sorted(families.items()):
        entries = [(base, "base (W0)"), (finetuned, "fine-tuned")]
        entries += [(members[m], m) for m in order if m in members]
        for model_id, role in entries:
            row: dict[str, Any] = {
                "family": f"{base} → {finetuned}, {rule}",
                "model_id": model_id,
                "role": role,
            }
            for dataset in wide.columns:
                row[f"top1 {dataset}"] = (
                    wide.loc[model_id, dataset] if model_id in wide.index else np.nan
                )
            if len(cka):
                row["mean_block_cka_to_base"] = (
                    1.0 if model_id == base else cka.get(model_id, np.nan)
                )
            rows.append(row)
    return pd.DataFrame(rows)


def monosoup_findings(table: pd.DataFrame, n: Mapping[str, int]) -> list[str]:
    """Return, per MonoSoup family and dataset, MonoSoup's top-1 vs its base and fine-tuned."""
    out = []
    datasets = [c.removeprefix("top1 ") for c in table.columns if c.startswith("top1 ")]
    for family, part in table.groupby("family", sort=False):
        roles = part.set_index("role")
        if "monosoup" not in roles.index:
            continue
        bits = []
        for dataset in datasets:
            column = f"top1 {dataset}"
            mono = float(roles.loc["monosoup", column])
            ft = float(roles.loc["fine-tuned", column])
            base = float(roles.loc["base (W0)", column])
            ablations = [
                f"{role} {_pp(float(roles.loc[role, column]))}"
                for role in ("highonly", "lowonly")
                if role in roles.index
            ]
            bits.append(
                f"on {dataset} MonoSoup {_pp(mono)} vs fine-tuned {_pp(ft)} "
                f"({difference_text(mono - ft, n.get(dataset))}) and W0 {_pp(base)}"
                + (f"; {', '.join(ablations)}" if ablations else "")
            )
        out.append(f"{family}: " + "; ".join(bits) + ".")
    return out


def cka_profile_findings(profile: pd.DataFrame, methods: Mapping[str, str]) -> list[str]:
    """Return where the same-block CKA to the reference is lowest/highest, and high vs low-only.

    Args:
        profile: the layer-CKA diagonal profile (``reference, model_id, block, block_index,
            cka``) of one dataset.
        methods: ``{model_id: variant method}`` (to pair high-only with low-only ablations of
            one base/fine-tuned/rank rule: matched by replacing ``highonly`` in the id).
    """
    if profile.empty:
        return []
    reference = str(profile["reference"].iloc[0])
    blocks = profile.drop_duplicates("block_index").sort_values("block_index")["block"].tolist()
    mean_by_block = profile.groupby("block_index")["cka"].mean()
    lowest, highest = int(mean_by_block.idxmin()), int(mean_by_block.idxmax())
    out = [
        f"Averaged over the {profile['model_id'].nunique()} models, the block least similar to "
        f"{reference} is {blocks[lowest]} (mean CKA {mean_by_block[lowest]:.4f}) and the most "
        f"similar is {blocks[highest]} ({mean_by_block[highest]:.4f}); all values lie between "
        f"{profile['cka'].min():.4f} and {profile['cka'].max():.4f}."
    ]
    wide = profile.pivot_table(index="model_id", columns="block_index", values="cka")
    for high in sorted(m for m, method in methods.items() if method == "highonly"):
        low = high.replace("highonly", "lowonly")
        if high not in wide.index or low not in wide.index:
            continue
        diff = (wide.loc[high] - wide.loc[low]).dropna()
        closer_high = int((diff > 0).sum())
        out.append(
            f"{high} is closer to {reference} than {low} at {closer_high} of {len(diff)} blocks "
            f"(CKA difference per block from {diff.min():+.4f} to {diff.max():+.4f}; one "
            "training run each, no spread)."
        )
    return out


def probe_findings(summary: pd.DataFrame, n: Mapping[str, int]) -> list[str]:
    """Return the seeds behind the probe summary and the largest spread over seeds."""
    out = []
    for dataset, part in summary.groupby("dataset", sort=False):
        seeds = sorted({int(s) for s in part["n_seeds"]})
        std = part["top1_std"].to_numpy(dtype=float)
        best = part.sort_values("top1_mean", ascending=False).iloc[0]
        spread = (
            f"the std over seeds is at most {100 * np.nanmax(std):.2f} pp"
            if np.isfinite(std).any()
            else "with one seed there is no spread to report"
        )
        n_d = n.get(dataset)
        out.append(
            f"{dataset}: {len(part)} models, {'/'.join(map(str, seeds))} seed(s) each"
            + (f", n = {n_d} test images" if n_d else "")
            + f"; {spread}. Highest mean last-block probe top-1: {best['model_id']} "
            f"({_pp(best['top1_mean'])})."
        )
    return out


def barrier_findings(barriers: pd.DataFrame, n: Mapping[str, int]) -> list[str]:
    """Return, per model pair and dataset, the headline error barrier in pp and test images."""
    out = []
    errors = barriers[barriers["kind"] == "error"]
    for r in errors.itertuples(index=False):
        n_d = n.get(r.dataset)
        head = r.barrier
        sentence = (
            f"{r.model_a} → {r.model_b} on {r.dataset}: error barrier {100 * head:.2f} pp"
            + (
                f" ({head * n_d:.0f} test images of {n_d})"
                if n_d and _resolved(head, n_d)
                else (" (below one test image)" if n_d else "")
            )
            + f" at α = {r.barrier_alpha:.2f}; midpoint barrier {100 * r.barrier_midpoint:.2f} pp "
            f"(endpoint errors {100 * r.value_start:.2f} % and {100 * r.value_end:.2f} %)."
        )
        out.append(sentence)
    return out


def _interval(row: pd.Series) -> str:
    low, high = row.get("ci_low"), row.get("ci_high")
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return ""
    return f" [95% CI {low:.3f}, {high:.3f}; Mantel p = {row['p_value']:.3g}]"


def consistency_findings(consistency: pd.DataFrame) -> list[str]:
    """Return the range of cross-dataset consistency per correlation method.

    With the stage's intervals (``ci_low``, ``ci_high``, ``p_value``, ``resolved``), the ends
    of the range carry their interval and the sentence says how many values are resolved (p <
    0.05 and an interval excluding 0).
    """
    out = []
    for method, part in consistency.groupby("method", sort=True):
        lo = part.loc[part["consistency"].idxmin()]
        hi = part.loc[part["consistency"].idxmax()]
        sentence = (
            f"{method}: consistency over {len(part)} metric × restriction × dataset-pair values "
            f"ranges {lo['consistency']:.3f}{_interval(lo)} ({lo['metric']}, "
            f"{lo['restriction']}) to {hi['consistency']:.3f}{_interval(hi)} ({hi['metric']}, "
            f"{hi['restriction']})."
        )
        if "tested" in part and part["tested"].map(lambda v: str(v) == "True").any():
            tested = part[part["tested"].map(lambda v: str(v) == "True")]
            resolved = int(tested["resolved"].map(lambda v: str(v) == "True").sum())
            sentence += (
                f" {resolved} of {len(tested)} tested values are resolved (Mantel p < 0.05 and "
                "the bootstrap-over-models 95% interval excludes 0)."
            )
        out.append(sentence)
    return out


def purity_findings(sweep: pd.DataFrame, n: int | None, metric: str = "top1") -> list[str]:
    """Return, per model, at how many k the high-purity selection beats the low-purity one."""
    out = []
    for model_id, part in sweep.groupby("model_id", sort=False):
        wide = part.pivot_table(index="k", columns="purity", values=metric)
        if not {"high", "low"} <= set(wide.columns):
            continue
        diff = (wide["high"] - wide["low"]).dropna()
        d = wide.index.max()
        compared = diff[diff.index < d]  # at k = d both selections keep every dimension
        if compared.empty:
            continue
        better = int(sum(_resolved(x, n) and x > 0 for x in compared))
        worse = int(sum(_resolved(x, n) and x < 0 for x in compared))
        out.append(
            f"{model_id}: keeping the k most orthogonal (high-purity) dimensions probed better "
            f"than the k least orthogonal at {better} of {len(compared)} k < d, worse at {worse}"
            + (", the rest within one test image" if n else "")
            + f" (high − low from {100 * compared.min():+.2f} to {100 * compared.max():+.2f} pp)."
        )
    return out
