"""Figure files and styles: one naming rule, one atomic writer, distinguishable series.

A figure's file name is its *stem* with the format appended (``<stem>.png``), never substituted:
stems are built from model ids, metric slugs and α values that may contain dots
(``rn_ft_lr0.001_s0``, ``cka_kernel_rbf_unbiased_sigma_0.4``), and ``Path.with_suffix`` would cut
them at the last dot, so two figures of different models would share — and overwrite — one
file. Every character of the stem is kept.

Figures are built as :class:`matplotlib.figure.Figure` objects (:func:`subplots`), not through
``pyplot``: library code never selects a backend (``matplotlib.use``) nor registers figures with
pyplot, so importing this package leaves a notebook's backend and open figures alone, and saving
works headless (each format's own canvas — Agg for PNG — renders the file).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sim_consistency.io import atomic_output

if TYPE_CHECKING:
    from sim_consistency.uncertainty import Interval

__all__ = [
    "FIGURE_FORMATS",
    "WIDE_INTERVAL",
    "data_limits",
    "figure_path",
    "half_width",
    "hatch_wide_cells",
    "save_figure",
    "save_heatmap",
    "save_profile_plot",
    "series_style",
    "subplots",
]

#: The formats every saved figure is written in (PNG for the report, PDF for papers).
FIGURE_FORMATS: tuple[str, ...] = ("png", "pdf")
#: Heatmap cells whose 95% interval is wider than ± this are hatched.
WIDE_INTERVAL = 0.05


def figure_path(stem: str | os.PathLike, fmt: str) -> Path:
    """Return ``<stem>.<fmt>``, keeping every character of the stem (dots included)."""
    stem = Path(stem)
    fmt = fmt.lstrip(".")
    if not stem.name or not fmt:
        raise ValueError(f"figure_path: empty stem or format (got {str(stem)!r}, {fmt!r}).")
    return stem.with_name(f"{stem.name}.{fmt}")


def subplots(
    nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None, **kwargs: Any
) -> tuple[Any, Any]:
    """Return ``(figure, axes)`` like ``pyplot.subplots``, as a pyplot-free ``Figure``.

    The figure has its own Agg canvas (``fig.canvas.draw()`` renders, text extents are real)
    whatever backend is active; ``kwargs`` go to :meth:`Figure.subplots` (``squeeze``,
    ``sharex``, ``sharey``, …).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(
    fig: Any,
    stem: str | os.PathLike,
    *,
    formats: Sequence[str] = FIGURE_FORMATS,
    dpi: int = 150,
) -> list[Path]:
    """Write a matplotlib figure to ``<stem>.<fmt>`` for each format, atomically.

    Works for any ``Figure`` without touching the backend: each format is rendered by its own
    canvas. A figure that ``pyplot`` manages (a user's ``plt.subplots()``) is closed afterwards
    so that it does not pile up; :func:`subplots` figures are never registered there.

    Returns:
        The written paths, in the order of ``formats``.
    """
    written = []
    try:
        for fmt in formats:
            path = figure_path(stem, fmt)
            with atomic_output(path) as tmp:
                fig.savefig(tmp, format=fmt.lstrip("."), dpi=dpi, bbox_inches="tight")
            written.append(path)
    finally:
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:  # never import it here: that would pick a backend
            pyplot.close(fig)
    return written


#: Line styles × markers cycled with the colours so that every series of a figure differs.
LINE_STYLES: tuple[str, ...] = ("-", "--", "-.", ":")
MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def series_style(i: int) -> dict[str, Any]:
    """Return ``color``/``linestyle``/``marker`` of series ``i``.

    10 colours × 4 line styles, with the marker shifted every 10 series: the first 200 series
    all differ (the first 40 already by colour and line style alone).
    """
    import matplotlib

    colors = matplotlib.colormaps["tab10"].colors  # type: ignore[attr-defined]
    return {
        "color": colors[i % 10],
        "linestyle": LINE_STYLES[(i // 10) % len(LINE_STYLES)],
        "marker": MARKERS[(i + i // 10) % len(MARKERS)],
    }


def data_limits(values: Sequence[float], *, pad: float = 0.08) -> tuple[float, float]:
    """Return y limits spanning the finite ``values`` with ``pad`` of their range on each side."""
    finite = [float(v) for v in values if np.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    span = hi - lo if hi > lo else max(abs(hi), 1e-3) * 0.05
    return lo - pad * span, hi + pad * span


def half_width(interval: Interval) -> Any:
    """Return the interval's half-width, ``(ci_high - ci_low) / 2`` (what ``±`` shows)."""
    return (interval.ci_high - interval.ci_low) / 2.0


def _short(labels: Sequence[str], width: int = 32) -> list[str]:
    """Return tick labels cut to ``width`` characters from the left (paths keep their end)."""
    return [str(x) if len(str(x)) <= width else "…" + str(x)[-(width - 1) :] for x in labels]


def save_heatmap(
    values: np.ndarray,
    path_stem: Path,
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    xlabel: str = "",
    ylabel: str = "",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    half_widths: np.ndarray | None = None,
    wide: float = WIDE_INTERVAL,
    hatch: np.ndarray | None = None,
    hatch_label: str = "",
) -> list[Path]:
    """Save an annotated viridis heatmap as ``<stem>.png`` and ``<stem>.pdf``.

    The colour scale is fixed (``vmin``..``vmax``, default 0–1) so that heatmaps of different
    pairs can be compared by eye; cells are annotated with two decimals up to 20×20. With
    ``half_widths`` (confidence intervals' half-widths, same shape) the annotation reads
    ``0.83±0.02`` and cells whose half-width exceeds ``wide`` (or is NaN: no interval) are
    hatched at every size; the title says so. Cells where the boolean mask ``hatch`` is True
    are hatched (``///``), explained by ``hatch_label`` in a legend below the axes.
    """
    rows, cols = values.shape
    lo = float(np.nanmin(values)) if vmin is None else vmin
    hi = float(np.nanmax(values)) if vmax is None else vmax
    hi = hi if hi > lo else lo + 1.0
    size = (max(4.0, 0.45 * cols + 2.5), max(3.5, 0.4 * rows + 2.0))
    fig, ax = subplots(figsize=size)
    image = ax.imshow(values, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(cols), labels=_short(col_labels), rotation=90, fontsize=7)
    ax.set_yticks(range(rows), labels=_short(row_labels), fontsize=7)
    if rows * cols <= 400:
        for i in range(rows):
            for j in range(cols):
                v = values[i, j]
                text = "nan" if not np.isfinite(v) else f"{v:.2f}"
                if half_widths is not None and np.isfinite(half_widths[i, j]):
                    text += f"\n±{half_widths[i, j]:.2f}"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=6 if half_widths is None else 5,
                    color="black" if np.isfinite(v) and (v - lo) / (hi - lo) > 0.6 else "white",
                )
    if half_widths is not None:
        hatch_wide_cells(ax, half_widths, wide)
        title += f"\n(±: 95% CI half-width; hatched: half-width > {wide:g} or no interval)"
    if hatch is not None and hatch.any():
        _hatch_cells(ax, hatch, hatch_label)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    return save_figure(fig, path_stem)


def hatch_wide_cells(ax: Any, half_widths: np.ndarray, wide: float) -> None:
    """Hatch (faint white ``//``) the cells whose half-width exceeds ``wide`` or is undefined.

    One patch collection, not a patch per cell: cheap to draw and to save at any size.
    """
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    hw = np.asarray(half_widths, dtype=np.float64)
    rows, cols = np.nonzero(~(hw <= wide))
    cells = [Rectangle((j - 0.5, i - 0.5), 1.0, 1.0) for i, j in zip(rows, cols, strict=True)]
    if cells:
        ax.add_collection(
            PatchCollection(
                cells,
                facecolor="none",
                edgecolor=(1.0, 1.0, 1.0, 0.35),  # faint: the annotation stays readable
                linewidth=0,
                hatch="//",
            )
        )


def _hatch_cells(ax: Any, mask: np.ndarray, label: str) -> None:
    from matplotlib.patches import Rectangle

    for i, j in zip(*np.nonzero(mask), strict=True):
        ax.add_patch(
            Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.85", lw=0)
        )
    proxy = Rectangle((0, 0), 1, 1, fill=False, hatch="///", edgecolor="0.3")
    ax.legend(
        [proxy], [label], loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=7,
        frameon=False,
    )  # fmt: skip


def save_profile_plot(
    profiles: Mapping[str, Sequence[float]],
    path_stem: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xticklabels: Sequence[str] | None = None,
    bands: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> list[Path]:
    """Save one line per series as ``<stem>.png`` and ``<stem>.pdf``.

    ``bands`` (``{series: (low, high)}``, e.g. 95% confidence intervals) are drawn as shaded
    bands in the series' colour and included in the y range.

    The y axis spans the data (not a fixed 0–1: CKA profiles of related models all lie near 1,
    where a 0–1 axis would show nothing); the ylabel says so. Each series has its own colour,
    line style and marker.
    """
    length = max((len(v) for v in profiles.values()), default=1)
    fig, ax = subplots(figsize=(max(5.5, 0.45 * length + 3.5), 4.0))
    bands = bands or {}
    for i, (label, values) in enumerate(profiles.items()):
        (line,) = ax.plot(range(len(values)), values, label=label, **series_style(i))
        if label in bands:
            low, high = bands[label]
            ax.fill_between(range(len(values)), low, high, color=line.get_color(), alpha=0.2)
    if xticklabels is not None:
        ax.set_xticks(range(len(xticklabels)), labels=list(xticklabels), rotation=90, fontsize=7)
    shown = [v for values in profiles.values() for v in values]
    shown += [v for low, high in bands.values() for v in (*low, *high)]
    lo, hi = data_limits(shown)
    ax.set_ylim(lo, hi)
    band_note = "\n(shaded bands: 95% confidence intervals)" if bands else ""
    ax.set_title(title + band_note, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{ylabel} (axis zoomed to the data)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return save_figure(fig, path_stem)
