"""consistency: equal to scipy on the upper triangle, model alignment, model-set pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr

from sim_consistency.errors import ConfigError
from sim_consistency.similarity import consistency, consistency_summary, model_set_pairs


def _sym(rng, ids):
    A = rng.uniform(size=(len(ids), len(ids)))
    A = (A + A.T) / 2
    np.fill_diagonal(A, 1)
    return pd.DataFrame(A, index=ids, columns=ids)


@pytest.mark.parametrize("method,fn", [("pearson", pearsonr), ("spearman", spearmanr)])
def test_equals_scipy_on_upper_triangle(rng, method, fn):
    ids = [f"m{i}" for i in range(6)]
    a, b = _sym(rng, ids), _sym(rng, ids)
    iu = np.triu_indices(6, k=1)
    table = consistency({"d1": a, "d2": b}, method=method)
    assert table.loc["d1", "d2"] == pytest.approx(fn(a.to_numpy()[iu], b.to_numpy()[iu])[0])
    assert table.loc["d1", "d1"] == 1.0
    assert table.loc["d2", "d1"] == table.loc["d1", "d2"]


def test_models_intersected_and_aligned_by_id(rng):
    ids = [f"m{i}" for i in range(5)]
    a = _sym(rng, ids)
    b = a.loc[ids[::-1], ids[::-1]]  # same numbers, reversed order
    c = pd.concat([a, a.iloc[:1]]).iloc[:0]  # empty frame placeholder not used
    del c
    extra = ids + ["zz"]
    big = _sym(rng, extra)
    big.loc[ids, ids] = a.to_numpy()
    table = consistency({"x": a, "y": b, "z": big})
    assert table.loc["x", "y"] == pytest.approx(1.0)
    assert table.loc["x", "z"] == pytest.approx(1.0)


def test_model_set_pairs_and_restriction(rng):
    meta = {
        "a": {"objective": "sup", "architecture_class": "cnn"},
        "b": {"objective": "sup", "architecture_class": "cnn"},
        "c": {"objective": "ssl", "architecture_class": "vit"},
        "d": {"objective": "ssl", "architecture_class": "vit"},
    }
    pairs = model_set_pairs(meta, {"objective": "sup"}, {"objective": "ssl"})
    assert pairs == [("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")]
    ids = list(meta)
    m1, m2 = _sym(rng, ids), _sym(rng, ids)
    t = consistency({"d1": m1, "d2": m2}, model_pairs=pairs)
    x = [m1.loc[p] for p in pairs]
    y = [m2.loc[p] for p in pairs]
    assert t.loc["d1", "d2"] == pytest.approx(pearsonr(x, y)[0])
    with pytest.raises(ConfigError, match="at least 3"):
        model_set_pairs(meta, {"objective": "sup"}, {"objective": "sup"})


def test_summary_and_errors(rng):
    ids = ["a", "b", "c", "d"]
    t = consistency({"x": _sym(rng, ids), "y": _sym(rng, ids), "z": _sym(rng, ids)})
    s = consistency_summary(t)
    assert s["n_pairs"] == 3 and s["min"] <= s["mean"] <= s["max"]
    with pytest.raises(ConfigError, match="method"):
        consistency({"x": _sym(rng, ids)}, method="kendall")
