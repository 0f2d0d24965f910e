"""The study report: ``results/report.md`` and a self-contained ``results/report.html``.

Reads what the stages wrote (never recomputes a metric) and lays out the key tables and figures.
Each section has a definition of what is shown and *findings*: sentences computed from the
section's own tables by :mod:`sim_consistency.findings`, worded as observations with their
resolution (one test image, n, seeds) — no sentence is written in advance. A headline summary
at the top repeats the key findings. Tables longer than the page shows say so and link to their
full CSV. Sections whose results are absent are left out and listed at the end, so a partial run
still gets a report that says what is missing.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sim_consistency import findings
from sim_consistency.io import atomic_write_text
from sim_consistency.project import ProjectLocation
from sim_consistency.soup_metrics import BARRIER_DEFINITIONS

__all__ = ["HTML_MAX_ROWS", "MD_MAX_ROWS", "Section", "Table", "build_sections", "write_report"]

#: Rows shown per table in the HTML / Markdown report; the linked CSV has all of them.
HTML_MAX_ROWS = 60
MD_MAX_ROWS = 40
_MONOSOUP_METHODS = ("monosoup", "highonly", "lowonly")


@dataclass
class Table:
    """A table of the report and the CSV that holds all of its rows."""

    name: str
    frame: pd.DataFrame
    csv: Path


@dataclass
class Section:
    """One report section: what is shown, computed findings, tables and figures."""

    title: str
    explanation: str
    findings: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def _existing(paths: Sequence[Path]) -> list[Path]:
    return [p for p in paths if p.is_file()]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def _derived(location: ProjectLocation, name: str, frame: pd.DataFrame) -> Table:
    """A table built for the report: written in full to ``aggregated/report/<name>.csv``."""
    csv = location.aggregated / "report" / f"{_slug(name)}.csv"
    atomic_write_text(csv, frame.to_csv(index=False))
    return Table(name, frame, csv)


def _variants(location: ProjectLocation, model_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """Return ``{id: {method, base, finetuned, rank_rule}}`` from the materialised recipes."""
    out = {}
    for model_id in model_ids:
        path = location.model_recipe_file(model_id)
        if not path.is_file():
            continue
        variant = json.loads(path.read_text()).get("recipe", {}).get("variant") or {}
        if variant.get("method"):
            out[model_id] = {
                "method": str(variant["method"]),
                "base": str(variant.get("base", "")),
                "finetuned": str(variant.get("finetuned", "")),
                "rank_rule": str(variant.get("rank_rule") or ""),
            }
    return out


def _heatmaps(location: ProjectLocation) -> list[Path]:
    """Return the layer-CKA heatmaps of the pairs each dataset's metadata lists, in order."""
    out = []
    for meta in sorted(location.layer_cka.glob("*/metadata.json")):
        pairs = json.loads(meta.read_text()).get("pairs", [])
        out += _existing([meta.parent / "heatmaps" / f"{a}__vs__{b}.png" for a, b in pairs])
    return out


def _n_per_dataset(accuracy: pd.DataFrame | None) -> dict[str, int]:
    if accuracy is None or "n_samples" not in accuracy:
        return {}
    return {str(d): int(v) for d, v in accuracy.groupby("dataset")["n_samples"].min().items()}


def _accuracy_wide(accuracy: pd.DataFrame) -> pd.DataFrame:
    wide = accuracy.pivot_table(index="model_id", columns="dataset", values="top1")
    wide.columns = [f"top1 {c}" for c in wide.columns]
    methods = accuracy.drop_duplicates("model_id").set_index("model_id")
    wide.insert(0, "method", methods.get("method", ""))
    first = wide.columns[1]
    return wide.sort_values(first, ascending=False).reset_index()


def build_sections(location: ProjectLocation) -> tuple[list[Section], list[str], list[str]]:
    """Return the report's sections, the names of those with no results yet, and the headline.

    The headline is a short list of the key computed findings, shown first.
    """
    soups = location.soup_metrics
    sections: list[Section] = []
    missing: list[str] = []
    headline: list[str] = []

    accuracy = _read(soups / "accuracy.csv")
    n = _n_per_dataset(accuracy)
    variants = (
        _variants(location, list(accuracy["model_id"].unique())) if accuracy is not None else {}
    )
    table = _read(soups / "soup_vs_ingredients.csv")
    if accuracy is not None:
        section = Section(
            "Models and soups: accuracy",
            "Test top-1 of every model — soups, MonoSoup and its ablations, WiSE-FT, TIES, their "
            "ingredients and W0 — from its own classification head (cached logits). Each soup is "
            "compared with the mean and the best of its ingredients (Wortsman et al. 2022), "
            "with a paired 95% bootstrap interval over test images, McNemar's exact test vs the "
            "best and a verdict (supported / not supported / inconclusive) from the interval. "
            "One training run per model: the intervals cover test-set sampling, not retraining.",
            findings.accuracy_findings(accuracy),
            [_derived(location, "accuracy of every model", _accuracy_wide(accuracy))],
            _existing([soups / "id_vs_ood.png", location.plots / "soup_improvement.png"]),
        )
        if table is not None:
            section.findings += findings.soup_findings(table, n)
            section.tables.append(
                Table("soup vs ingredients", table, soups / "soup_vs_ingredients.csv")
            )
        headline += section.findings[: len(n)]
        sections.append(section)
    else:
        missing.append("soup accuracy (scripts/soup_metrics.py)")

    profiles = sorted(location.layer_cka.glob("*/diagonal_profile.csv"))
    profile = pd.concat([pd.read_csv(p) for p in profiles]) if profiles else None
    mono_ids = [m for m, v in variants.items() if v["method"] in _MONOSOUP_METHODS]
    if accuracy is not None and mono_ids:
        first_profile = None
        if profile is not None and not profile.empty:
            first_profile = profile[profile["dataset"] == profile["dataset"].iloc[0]]
        mono_table = findings.monosoup_table(
            accuracy, {m: variants[m] for m in mono_ids}, first_profile
        )
        layer_figures = sorted(soups.glob("monosoup_layers_*.png"))
        mono_first = [p for p in layer_figures if "_monosoup_" in p.name] or layer_figures
        section = Section(
            "MonoSoup and its ablations",
            "MonoSoup (spectral edit of the fine-tuning update W1 − W0: the top singular "
            "directions kept with weight λ_high, the residual with λ_low) next to its high-only "
            "and low-only ablations, the base W0 and the fine-tuned model, per rank rule"
            + (
                "; mean_block_cka_to_base is the mean same-block linear CKA to W0 on "
                f"{first_profile['dataset'].iloc[0]}"
                if first_profile is not None
                else ""
            )
            + ". The figures show MonoSoup's per-layer kept rank and mixing weights.",
            findings.monosoup_findings(mono_table, n),
            [_derived(location, "MonoSoup and its ablations", mono_table)],
            mono_first[:2],
        )
        headline += section.findings[:1]
        sections.append(section)

    diagonal = sorted(location.layer_cka.glob("*/diagonal_profile.png"))
    if diagonal and profile is not None:
        heatmaps = _heatmaps(location)
        wanted = [h for h in heatmaps if any(h.name.endswith(f"__vs__{m}.png") for m in mono_ids)]
        methods = {m: v["method"] for m, v in variants.items()}
        cka_findings = []
        for dataset, part in profile.groupby("dataset", sort=False):
            cka_findings += [
                f"{dataset}: {s}" for s in findings.cka_profile_findings(part, methods)
            ]
        sections.append(
            Section(
                "Block-wise CKA against the reference",
                "Linear CKA between each block of the reference (W0) and the same block of each "
                "other model — the MonoSoup paper's profile; the y axis is zoomed to the data. "
                "The heatmaps show full block×block grids (reference rows, model columns).",
                cka_findings,
                [Table("same-block CKA profile", profile, profiles[0])]
                if len(profiles) == 1
                else [],
                [*diagonal, *(wanted or heatmaps)[:3]],
            )
        )
        headline += cka_findings[:2]
    else:
        missing.append("layer CKA (scripts/layer_cka.py)")

    similarity_plots = sorted(location.plots.glob("similarity_*.png"))[:4]
    consistency = _read(location.aggregated / "consistency.csv")
    relation = _read(location.aggregated / "similarity_vs_performance.csv")
    if similarity_plots or consistency is not None:
        section = Section(
            "Representational similarity and Rep2Rep consistency",
            "Model×model similarity matrices per dataset and metric (colour scale spans each "
            "figure's values; for matrices computed with --ci, cells whose 95% jackknife "
            "interval over images is wider than ±0.05 are hatched); consistency is the "
            "correlation of two datasets' matrices over model pairs — high values mean the "
            "similarity ranking of model pairs holds across datasets (Ciernik et al. 2025).",
            [],
            [],
            [*similarity_plots, *_existing([location.plots / "consistency.png"])],
        )
        if consistency is not None:
            section.findings += findings.consistency_findings(consistency)
            section.tables.append(
                Table(
                    "consistency across datasets",
                    consistency,
                    location.aggregated / "consistency.csv",
                )
            )
        if relation is not None:
            section.tables.append(
                Table(
                    "similarity vs probe-accuracy gap",
                    relation,
                    location.aggregated / "similarity_vs_performance.csv",
                )
            )
        headline += section.findings[:1]
        sections.append(section)
    else:
        missing.append("similarity / consistency (distance_matrix_computation, consistency)")

    from sim_consistency.analysis.report_section import analyses_section

    rep2rep = analyses_section(location)
    if rep2rep is not None:  # optional stage: never listed as missing
        headline += rep2rep.findings[:1]
        sections.append(rep2rep)

    summary = _read(location.aggregated / "probe_summary.csv")
    depth = sorted(location.plots.glob("probe_accuracy_vs_depth_*.png"))
    if summary is not None or depth:
        sections.append(
            Section(
                "Linear probes",
                "Test top-1 of a linear probe on frozen features (fast L-BFGS protocol, weight "
                "decay chosen on a seeded validation split), mean ± std over probe seeds "
                "(training randomness) and top1_ci_halfwidth, the mean half-width of Wilson's "
                "95% interval over test rows (test-set sampling); error bars in the figures.",
                findings.probe_findings(summary, n) if summary is not None else [],
                [Table("probe summary", summary, location.aggregated / "probe_summary.csv")]
                if summary is not None
                else [],
                depth,
            )
        )
    else:
        missing.append("linear probes (scripts/single_model_evaluation.py)")

    from sim_consistency.probe.report_section import combined_and_transfer_section

    combined = combined_and_transfer_section(location)
    if combined is not None:  # optional stages: never listed as missing
        headline += combined.findings[:1]
        sections.append(combined)

    barriers = _read(soups / "barriers.csv")
    if barriers is not None:
        section = Section(
            "Interpolation barriers",
            "Error and loss along the straight line θ(α) = (1−α)·θ_A + α·θ_B. Two definitions: "
            f"barrier = {BARRIER_DEFINITIONS['barrier']}; barrier_midpoint = "
            f"{BARRIER_DEFINITIONS['barrier_midpoint']}. A barrier near 0 means both models sit "
            "in one linearly connected basin.",
            findings.barrier_findings(barriers, n),
            [Table("barriers", barriers, soups / "barriers.csv")],
            _existing([soups / "interpolation_error.png", soups / "interpolation_loss.png"]),
        )
        headline += section.findings[:2]
        sections.append(section)
    else:
        missing.append("barriers (scripts/soup_metrics.py --barrier_models …)")

    branching = _read(soups / "branching_soup_results.csv")
    if branching is not None:
        section = Section(
            "Branching and basins",
            "Runs forked from W0's training at different epochs, souped per branching point "
            "and run group; the figures show distance and soup accuracy against the branching "
            "epoch. The verdict on 'late branching makes better soups' comes from a paired 95% "
            "bootstrap interval over test images of the late − early difference.",
            [],
            [Table("soups per branching point", branching, soups / "branching_soup_results.csv")],
            sorted(soups.glob("*branching*.png")) + sorted(soups.glob("soup_vs_distance*.png")),
        )
        summary_file = soups / "branching_summary.json"
        if summary_file.is_file():
            section.findings.extend(
                f"{group}: {s['statement']}"
                for group, s in json.loads(summary_file.read_text()).items()
            )
        headline += section.findings[:2]
        sections.append(section)
    else:
        missing.append("branching analysis (models with branch_epoch metadata)")

    purity = _read(soups / "purity.csv")
    sweep = _read(soups / "retention_sweep.csv")
    if purity is not None:
        sweep_n = n.get(str(purity["dataset"].iloc[0])) if "dataset" in purity else None
        sections.append(
            Section(
                "Feature purity",
                "Silhouette of the last block's features by class, and mean |cos| between "
                "feature dimensions; the retention sweep probes the k most (high purity) vs "
                "least (low purity) orthogonal dimensions.",
                findings.purity_findings(sweep, sweep_n) if sweep is not None else [],
                [Table("purity", purity, soups / "purity.csv")],
                sorted(soups.glob("retention_sweep_*.png"))[:3],
            )
        )
    else:
        missing.append("feature purity (scripts/soup_metrics.py)")
    return sections, missing, headline


def _format(table: pd.DataFrame) -> pd.DataFrame:
    return table.round(4)


def _truncation(table: Table, shown: int, link: str) -> str | None:
    if len(table.frame) <= shown:
        return None
    return f"showing the first {shown} of {len(table.frame)} rows; full table: {link}"


def _markdown_table(table: Table, results: Path) -> str:
    frame = _format(table.frame)
    shown = frame.head(MD_MAX_ROWS)
    header = "| " + " | ".join(map(str, shown.columns)) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    rel = Path(table.csv).relative_to(results).as_posix()
    note = _truncation(table, MD_MAX_ROWS, f"[{rel}]({rel})")
    return "\n".join([header, rule, *body, *([f"\n*({note})*"] if note else [])])


def _markdown(
    sections: Sequence[Section], missing: Sequence[str], headline: Sequence[str], results: Path
) -> str:
    lines = ["# sim-consistency study report", ""]
    if headline:
        lines += ["## Summary", "", *[f"* {h}" for h in headline], ""]
    for section in sections:
        lines += [f"## {section.title}", "", section.explanation, ""]
        lines += [f"* {f}" for f in section.findings] + ([""] if section.findings else [])
        for table in section.tables:
            lines += [f"**{table.name}**", "", _markdown_table(table, results), ""]
        for fig in section.figures:
            lines += [f"![{fig.stem}]({fig.relative_to(results).as_posix()})", ""]
    if missing:
        lines += ["## Not run yet", "", *[f"* {m}" for m in missing], ""]
    return "\n".join(lines)


def _html_table(table: Table, results: Path) -> str:
    rel = Path(table.csv).relative_to(results).as_posix()
    link = f"<a href='{html.escape(rel)}'>{html.escape(rel)}</a>"
    note = _truncation(table, HTML_MAX_ROWS, link)
    body = _format(table.frame).head(HTML_MAX_ROWS).to_html(index=False)
    caption = f"<p class='trunc'>{note}</p>" if note else f"<p class='src'>CSV: {link}</p>"
    return f"<h4>{html.escape(table.name)}</h4>{caption}<div class='tbl'>{body}</div>"


def _html(
    sections: Sequence[Section], missing: Sequence[str], headline: Sequence[str], results: Path
) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>sim-consistency report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;font-size:12px;margin:0.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%;margin:0.5em 0}"
        ".tbl{overflow-x:auto}.summary{background:#eef;padding:0.5em 1em}"
        ".findings li{margin:0.2em 0}.trunc{color:#a40;font-size:12px}"
        ".src{color:#555;font-size:12px}</style></head><body>",
        "<h1>sim-consistency study report</h1>",
    ]
    if headline:
        parts.append("<div class='summary'><h2>Summary</h2><ul>")
        parts += [f"<li>{html.escape(h)}</li>" for h in headline]
        parts.append("</ul></div>")
    for section in sections:
        parts.append(
            f"<h2>{html.escape(section.title)}</h2><p>{html.escape(section.explanation)}</p>"
        )
        if section.findings:
            parts.append("<ul class='findings'>")
            parts += [f"<li>{html.escape(f)}</li>" for f in section.findings]
            parts.append("</ul>")
        parts += [_html_table(t, results) for t in section.tables]
        for fig in section.figures:
            data = base64.b64encode(fig.read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(fig.stem)}' src='data:image/png;base64,{data}'>")
    if missing:
        parts.append("<h2>Not run yet</h2><ul>")
        parts += [f"<li>{html.escape(m)}</li>" for m in missing]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(location: ProjectLocation) -> tuple[Path, Path]:
    """Write ``results/report.md`` and the self-contained ``results/report.html``."""
    sections, missing, headline = build_sections(location)
    results = location.results
    md = atomic_write_text(results / "report.md", _markdown(sections, missing, headline, results))
    page = atomic_write_text(results / "report.html", _html(sections, missing, headline, results))
    return md, page
