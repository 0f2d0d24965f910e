"""The study report: ``results/report.md`` and a self-contained ``results/report.html``.

Reads what the stages wrote (never recomputes a metric) and lays out the key tables and figures,
each with a one-line explanation, so a researcher can follow the study without opening code.
Sections whose results are absent are left out and listed at the end, so a partial run still
gets a report that says what is missing.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sim_consistency.io import atomic_write_text
from sim_consistency.project import ProjectLocation

__all__ = ["Section", "build_sections", "write_report"]


@dataclass
class Section:
    """One report section: a title, a one-line explanation, tables and figures."""

    title: str
    explanation: str
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _read(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def _round(table: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    return table.round(digits)


def _existing(paths: Sequence[Path]) -> list[Path]:
    return [p for p in paths if p.is_file()]


def build_sections(location: ProjectLocation) -> tuple[list[Section], list[str]]:
    """Return the report's sections and the names of those with no results yet."""
    soups = location.soup_metrics
    sections: list[Section] = []
    missing: list[str] = []

    accuracy = _read(soups / "accuracy.csv")
    table = _read(soups / "soup_vs_ingredients.csv")
    if accuracy is not None:
        section = Section(
            "Models and soups: accuracy",
            "Test top-1 of every model from its own head (cached logits); each soup is compared "
            "with the mean and the best of its ingredients — positive improvement means the "
            "soup beats them (Wortsman et al. 2022).",
            [("accuracy", _round(accuracy))],
            _existing([soups / "id_vs_ood.png", location.plots / "soup_improvement.png"]),
        )
        if table is not None:
            section.tables.append(("soup vs ingredients", _round(table)))
        sections.append(section)
    else:
        missing.append("soup accuracy (scripts/soup_metrics.py)")

    diagonal = sorted(location.layer_cka.glob("*/diagonal_profile.png"))
    if diagonal:
        heatmaps = sorted(location.layer_cka.glob("*/heatmaps/*.png"))[:3]
        sections.append(
            Section(
                "Block-wise CKA against the reference",
                "Linear CKA between the same block of the reference (pretrained W0) and of each "
                "other model: the MonoSoup paper's profile — fine-tuning changes late blocks "
                "most; high-only edits stay closer to W0 than low-only ones. The heatmaps show "
                "the full block×block grids.",
                [],
                [*diagonal, *heatmaps],
            )
        )
    else:
        missing.append("layer CKA (scripts/layer_cka.py)")

    similarity_plots = sorted(location.plots.glob("similarity_*.png"))[:4]
    consistency = _read(location.aggregated / "consistency.csv")
    relation = _read(location.aggregated / "similarity_vs_performance.csv")
    if similarity_plots or consistency is not None:
        section = Section(
            "Representational similarity and Rep2Rep consistency",
            "Model×model similarity matrices per dataset and metric; consistency is the "
            "correlation of two datasets' matrices — high values mean the similarity ranking of "
            "model pairs holds across datasets.",
            [],
            [*similarity_plots, *_existing([location.plots / "consistency.png"])],
        )
        if consistency is not None:
            section.tables.append(("consistency across datasets", _round(consistency)))
        if relation is not None:
            section.tables.append(("similarity vs probe-accuracy gap", _round(relation)))
        sections.append(section)
    else:
        missing.append("similarity / consistency (distance_matrix_computation, consistency)")

    summary = _read(location.aggregated / "probe_summary.csv")
    depth = sorted(location.plots.glob("probe_accuracy_vs_depth_*.png"))
    if summary is not None or depth:
        sections.append(
            Section(
                "Linear probes",
                "Test top-1 of a linear probe on frozen features (fast L-BFGS protocol, weight "
                "decay chosen on a validation split), last block and across depth.",
                [("probe summary", _round(summary))] if summary is not None else [],
                depth,
            )
        )
    else:
        missing.append("linear probes (scripts/single_model_evaluation.py)")

    barriers = _read(soups / "barriers.csv")
    if barriers is not None:
        sections.append(
            Section(
                "Interpolation barriers",
                "Error and loss along the straight line between two models: a barrier near 0 "
                "means both sit in one linearly connected basin, where averaging is safe.",
                [("barriers", _round(barriers))],
                _existing([soups / "interpolation_error.png", soups / "interpolation_loss.png"]),
            )
        )
    else:
        missing.append("barriers (scripts/soup_metrics.py --barrier_models …)")

    branching = _read(soups / "branching_soup_results.csv")
    if branching is not None:
        section = Section(
            "Branching and basins",
            "Runs forked from W0's training at different epochs, souped per branching point: "
            "late forks stay close and soup well; early forks drift apart.",
            [("soups per branching point", _round(branching))],
            sorted(soups.glob("*branching*.png")) + sorted(soups.glob("soup_vs_distance*.png")),
        )
        summary_file = soups / "branching_summary.json"
        if summary_file.is_file():
            section.notes.extend(
                s["statement"] for s in json.loads(summary_file.read_text()).values()
            )
        sections.append(section)
    else:
        missing.append("branching analysis (models with branch_epoch metadata)")

    mono = sorted(soups.glob("monosoup_layers_*.png"))
    if mono:
        sections.append(
            Section(
                "MonoSoup per-layer statistics",
                "For each edited weight matrix: kept rank k vs effective rank, and the mixing "
                "weights λ_high / λ_low that MonoSoup gives the top and the residual directions.",
                [],
                mono[:3],
            )
        )

    purity = _read(soups / "purity.csv")
    if purity is not None:
        sections.append(
            Section(
                "Feature purity",
                "Silhouette of the last block's features by class, and mean |cos| between "
                "feature dimensions; the sweep keeps the k most vs least orthogonal dimensions — "
                "high-purity dimensions should probe better.",
                [("purity", _round(purity))],
                sorted(soups.glob("retention_sweep_*.png"))[:3],
            )
        )
    else:
        missing.append("feature purity (scripts/soup_metrics.py)")
    return sections, missing


def _markdown_table(table: pd.DataFrame, max_rows: int = 40) -> str:
    shown = table.head(max_rows)
    header = "| " + " | ".join(map(str, shown.columns)) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    more = [f"\n*({len(table) - max_rows} more rows in the CSV)*"] if len(table) > max_rows else []
    return "\n".join([header, rule, *body, *more])


def _markdown(sections: Sequence[Section], missing: Sequence[str], results: Path) -> str:
    lines = ["# sim-consistency study report", ""]
    for section in sections:
        lines += [f"## {section.title}", "", section.explanation, ""]
        lines += [f"> {note}" for note in section.notes] + ([""] if section.notes else [])
        for name, table in section.tables:
            lines += [f"**{name}**", "", _markdown_table(table), ""]
        for fig in section.figures:
            lines += [f"![{fig.stem}]({fig.relative_to(results).as_posix()})", ""]
    if missing:
        lines += ["## Not run yet", "", *[f"* {m}" for m in missing], ""]
    return "\n".join(lines)


def _html(sections: Sequence[Section], missing: Sequence[str]) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>sim-consistency report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;font-size:12px;margin:0.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%;margin:0.5em 0}"
        ".note{background:#eef;padding:0.5em}</style></head><body>",
        "<h1>sim-consistency study report</h1>",
    ]
    for section in sections:
        parts.append(
            f"<h2>{html.escape(section.title)}</h2><p>{html.escape(section.explanation)}</p>"
        )
        parts += [f"<p class='note'>{html.escape(n)}</p>" for n in section.notes]
        for name, table in section.tables:
            parts.append(f"<h4>{html.escape(name)}</h4>{table.head(60).to_html(index=False)}")
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
    sections, missing = build_sections(location)
    md = atomic_write_text(
        location.results / "report.md", _markdown(sections, missing, location.results)
    )
    page = atomic_write_text(location.results / "report.html", _html(sections, missing))
    return md, page
