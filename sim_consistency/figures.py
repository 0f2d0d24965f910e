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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sim_consistency.io import atomic_output

__all__ = [
    "FIGURE_FORMATS",
    "data_limits",
    "figure_path",
    "save_figure",
    "series_style",
    "subplots",
]

#: The formats every saved figure is written in (PNG for the report, PDF for papers).
FIGURE_FORMATS: tuple[str, ...] = ("png", "pdf")


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
