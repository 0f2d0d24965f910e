"""Figure files: one naming rule and one atomic writer for every figure the package saves.

A figure's file name is its *stem* with the format appended (``<stem>.png``), never substituted:
stems are built from model ids, metric slugs and α values that may contain dots
(``rn_ft_lr0.001_s0``, ``cka_kernel_rbf_unbiased_sigma_0.4``), and ``Path.with_suffix`` would cut
them at the last dot, so two figures of different models would share — and overwrite — one
file. Every character of the stem is kept.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sim_consistency.io import atomic_output

__all__ = ["FIGURE_FORMATS", "figure_path", "save_figure"]

#: The formats every saved figure is written in (PNG for the report, PDF for papers).
FIGURE_FORMATS: tuple[str, ...] = ("png", "pdf")


def figure_path(stem: str | os.PathLike, fmt: str) -> Path:
    """Return ``<stem>.<fmt>``, keeping every character of the stem (dots included)."""
    stem = Path(stem)
    fmt = fmt.lstrip(".")
    if not stem.name or not fmt:
        raise ValueError(f"figure_path: empty stem or format (got {str(stem)!r}, {fmt!r}).")
    return stem.with_name(f"{stem.name}.{fmt}")


def save_figure(
    fig: Any,
    stem: str | os.PathLike,
    *,
    formats: Sequence[str] = FIGURE_FORMATS,
    dpi: int = 150,
) -> list[Path]:
    """Write a matplotlib figure to ``<stem>.<fmt>`` for each format, atomically; close it.

    Returns:
        The written paths, in the order of ``formats``.
    """
    import matplotlib.pyplot as plt

    written = []
    try:
        for fmt in formats:
            path = figure_path(stem, fmt)
            with atomic_output(path) as tmp:
                fig.savefig(tmp, format=fmt.lstrip("."), dpi=dpi, bbox_inches="tight")
            written.append(path)
    finally:
        plt.close(fig)
    return written
