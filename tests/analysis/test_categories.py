"""Consistency by model category, anchor and dataset category on constructed matrices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sim_consistency.analysis.categories import (
    anchor_consistency,
    category_consistency,
    dataset_category_consistency,
    long_table,
)
from sim_consistency.errors import ConfigError
from sim_consistency.similarity import consistency

IDS = ["a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4"]
META = {
    m: {"objective": m[0].upper(), "size_class": "small" if m[1] in "12" else "large"} for m in IDS
}


def _symmetric(values: np.ndarray) -> pd.DataFrame:
    matrix = np.triu(values, 1)
    matrix = matrix + matrix.T + np.eye(len(values))
    return pd.DataFrame(matrix, index=IDS, columns=IDS)


@pytest.fixture
def matrices() -> dict[str, pd.DataFrame]:
    """D1 random; D2 keeps the A–A similarities, reverses the B–B ones; D3 is D1 rescaled."""
    rng = np.random.default_rng(0)
    d1 = _symmetric(rng.uniform(0.1, 0.9, size=(8, 8)))
    d2 = d1.copy()
    b = [m for m in IDS if m.startswith("b")]
    d2.loc[b, b] = 1.0 - d1.loc[b, b]
    d3 = 0.5 * d1 + 0.2
    eye = np.eye(len(IDS), dtype=bool)
    return {"D1": d1, "D2": d2.mask(eye, 1.0), "D3": d3.mask(eye, 1.0)}


def test_planted_category_consistency_is_recovered(matrices):
    table = category_consistency(matrices, META, ["objective"])
    got = table.set_index(["category", "dataset_a", "dataset_b"])["consistency"]
    assert got[("A", "D1", "D2")] == pytest.approx(1.0, abs=1e-12)
    assert got[("B", "D1", "D2")] == pytest.approx(-1.0, abs=1e-12)  # reversed in D2
    assert got[("A", "D1", "D3")] == pytest.approx(1.0, abs=1e-12)  # affine map
    assert set(table["n_model_pairs"]) == {6}


def test_a_category_holding_every_model_equals_the_all_pairs_table(matrices):
    meta = {m: {"objective": "all"} for m in IDS}
    table = category_consistency(matrices, meta, ["objective"], "spearman")
    expected = long_table(consistency(matrices, method="spearman"))
    np.testing.assert_allclose(table["consistency"], expected["consistency"], rtol=0, atol=0)


def test_small_categories_are_left_out_with_a_warning(matrices):
    meta = {m: {"objective": "A" if m == "a1" else "rest"} for m in IDS}
    with pytest.warns(UserWarning, match="objective=A has 1 model"):
        table = category_consistency(matrices, meta, ["objective"])
    assert set(table["category"]) == {"rest"}


def test_no_category_field_set_is_a_clear_error(matrices):
    with pytest.raises(ConfigError, match="no model of the config has any of the metadata"):
        category_consistency(matrices, META, ["training_data"])


def test_anchor_consistency_is_the_correlation_of_its_rows(matrices):
    table = anchor_consistency(matrices, ["a1", "b1"])
    row = table.set_index(["anchor", "dataset_a", "dataset_b"])["consistency"]
    others = [m for m in IDS if m != "b1"]
    expected = stats.pearsonr(matrices["D1"].loc["b1", others], matrices["D2"].loc["b1", others])
    assert row[("b1", "D1", "D2")] == pytest.approx(expected[0], abs=1e-12)
    assert row[("a1", "D1", "D3")] == pytest.approx(1.0, abs=1e-12)
    assert set(table["n_models"]) == {7}
    with pytest.raises(ConfigError, match=r"--anchors: \['zz'\]"):
        anchor_consistency(matrices, ["zz"])


def test_dataset_category_means():
    names = ["n1", "n2", "s1", "s2"]
    table = pd.DataFrame(np.eye(4), index=names, columns=names)
    for (a, b), v in {("n1", "n2"): 0.8, ("s1", "s2"): 0.6, ("n1", "s1"): 0.1, ("n1", "s2"): 0.3,
                      ("n2", "s1"): 0.2, ("n2", "s2"): 0.4}.items():  # fmt: skip
        table.loc[a, b] = table.loc[b, a] = v
    cats = {"n1": "natural", "n2": "natural", "s1": "structured", "s2": "structured"}
    got = dataset_category_consistency(table, cats).set_index(["category_a", "category_b"])
    assert got.loc[("natural", "natural"), "mean"] == pytest.approx(0.8)
    assert got.loc[("natural", "structured"), "mean"] == pytest.approx(0.25)
    assert got.loc[("natural", "structured"), "n_dataset_pairs"] == 4
    with pytest.raises(ConfigError, match="none of the datasets"):
        dataset_category_consistency(table, {"other": "x"})


def test_dataset_categories_file_formats(tmp_path):
    from sim_consistency.analysis.categories import read_dataset_categories

    rep2rep = tmp_path / "dataset_info.json"  # Rep2Rep's layout: {dataset: {domain, name}}
    rep2rep.write_text('{"wds/cars": {"domain": "Natural (single-domain)", "name": "Cars"}}')
    assert read_dataset_categories(rep2rep) == {"wds/cars": "Natural (single-domain)"}
    plain = tmp_path / "plain.json"
    plain.write_text('{"wds/digits": "structured"}')
    assert read_dataset_categories(plain) == {"wds/digits": "structured"}
    plain.write_text('{"wds/digits": 3}')
    with pytest.raises(ConfigError, match="entry 'wds/digits' must be a category string"):
        read_dataset_categories(plain)
    with pytest.raises(ConfigError, match="not a readable JSON file"):
        read_dataset_categories(tmp_path / "absent.json")
