"""The one JSON coercion: NumPy, tuples, paths and non-finite floats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sim_consistency.jsonable import jsonable


def test_numpy_tuples_paths_and_keys_become_json_types():
    value = {
        np.int64(3): (np.float32(0.5), [np.arange(2)]),
        "path": Path("a/b.h5"),
        "mean": (0.485, 0.456, 0.406),
        "flag": np.bool_(True),
        "label": np.str_("cat"),
    }
    out = jsonable(value)
    assert out == {
        "3": [0.5, [[0, 1]]],
        "path": "a/b.h5",
        "mean": [0.485, 0.456, 0.406],
        "flag": True,
        "label": "cat",
    }
    assert type(out["3"][0]) is float and type(out["flag"]) is bool
    json.dumps(out, allow_nan=False)


def test_nonfinite_floats_become_null_only_when_asked():
    value = {"a": float("nan"), "b": [np.float64(np.inf), 1.0]}
    assert jsonable(value, nonfinite_as_none=True) == {"a": None, "b": [None, 1.0]}
    kept = jsonable(value)
    assert np.isnan(kept["a"]) and kept["b"][0] == np.inf
