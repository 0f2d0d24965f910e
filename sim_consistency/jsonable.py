"""The one JSON coercion: configs, results and metadata as plain JSON types.

NumPy scalars and arrays, tuples (timm and open_clip configs use them) and paths become JSON
numbers, lists and strings, recursively; mapping keys become strings. Used wherever the package
writes JSON or logs a config, so that the same value is always written the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np

__all__ = ["jsonable"]


def jsonable(value: Any, *, nonfinite_as_none: bool = False) -> Any:
    """Return ``value`` with JSON types only (dict, list, str, int, float, bool, None).

    Args:
        value: any nesting of mappings, lists/tuples, NumPy arrays and scalars, paths and
            JSON scalars; other objects are returned unchanged.
        nonfinite_as_none: write NaN and ±inf floats as ``None`` (``null``), for files read
            by strict JSON parsers (``json.dumps(..., allow_nan=False)``).
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, nonfinite_as_none=nonfinite_as_none) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, nonfinite_as_none=nonfinite_as_none) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist(), nonfinite_as_none=nonfinite_as_none)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, PurePath):
        return str(value)
    if nonfinite_as_none and isinstance(value, float) and not math.isfinite(value):
        return None
    return value
