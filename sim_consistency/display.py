"""Show tables and figures from the aggregation notebooks: inline in Jupyter, as text in a shell.

The notebooks are paired with percent-format ``.py`` files that also run as plain scripts
(``python notebooks/aggregate_soups.py``). :func:`show` displays a table as HTML and a saved
PNG figure as an inline image when an IPython kernel runs the code, and prints the table (and
the figure's path) otherwise, so both ways of running a notebook say what they found.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["in_notebook", "show"]

#: Rows printed or displayed per table (the CSV under ``results/aggregated`` has all of them).
MAX_ROWS = 40


def in_notebook() -> bool:
    """Return True inside an IPython kernel (Jupyter, nbclient), False in a plain interpreter."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _figures(obj: Any) -> list[Path] | None:
    if isinstance(obj, (str, Path)) and str(obj).endswith(".png"):
        return [Path(obj)]
    if isinstance(obj, Iterable) and not isinstance(obj, (str, bytes, pd.DataFrame, dict)):
        items = list(obj)
        if items and all(isinstance(p, Path) and p.suffix == ".png" for p in items):
            return items
    return None


def show(obj: Any, title: str | None = None) -> None:
    """Display a DataFrame, a PNG path or a list of PNG paths (inline image / HTML table).

    Outside a notebook, tables are printed as text (first :data:`MAX_ROWS` rows) and figures
    by path. A table with more rows says how many it left out.
    """
    notebook = in_notebook()
    if notebook:
        from IPython.display import HTML, Image, display
    if title:
        if notebook:
            display(HTML(f"<h4>{title}</h4>"))
        else:
            print(f"\n== {title}")
    figures = _figures(obj)
    if figures is not None:
        for path in figures:
            if notebook:
                display(Image(filename=str(path)))
            else:
                print(f"figure: {path}")
        return
    if isinstance(obj, pd.DataFrame):
        more = len(obj) - MAX_ROWS
        note = f"({more} more rows in the CSV)" if more > 0 else ""
        if notebook:
            display(HTML(obj.head(MAX_ROWS).to_html(index=False) + (f"<p>{note}</p>" * bool(note))))
        else:
            print(obj.head(MAX_ROWS).to_string(index=False) + (f"\n{note}" if note else ""))
        return
    if notebook:
        display(obj)
    else:
        print(obj)
