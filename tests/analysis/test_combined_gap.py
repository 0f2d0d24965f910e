"""Similarity vs the combined-probe gap on a constructed table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim_consistency.analysis.combined_gap import (
    COMBINED_COLUMNS,
    gap_summary,
    gap_vs_similarity,
    read_combined_probes,
)
from sim_consistency.errors import ConfigError, DataError, MissingInputError

IDS = ["a", "b", "c", "d"]


def _matrix() -> pd.DataFrame:
    values = np.array([[1, 0.9, 0.5, 0.2], [0.9, 1, 0.4, 0.3], [0.5, 0.4, 1, 0.6],
                       [0.2, 0.3, 0.6, 1]])  # fmt: skip
    return pd.DataFrame(values, index=IDS, columns=IDS)


def _table(tmp_path) -> tuple[pd.DataFrame, object]:
    matrix = _matrix()
    rows = []
    for i, a in enumerate(IDS):
        for b in IDS[i + 1 :]:
            gap = 0.1 * (1 - matrix.loc[a, b])  # dissimilar pairs gain more
            rows.append({"dataset": "wds/digits", "model_a": a, "model_b": b,
                         "combined_top1": 0.7 + gap, "top1_a": 0.7, "top1_b": 0.6})  # fmt: skip
    rows.append({"dataset": "elsewhere", "model_a": "a", "model_b": "b", "combined_top1": 0.5,
                 "top1_a": 0.5, "top1_b": 0.5})  # fmt: skip
    path = tmp_path / "combined.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return matrix, path


def test_gap_is_combined_minus_best_single_and_correlates(tmp_path):
    matrix, path = _table(tmp_path)
    joined = gap_vs_similarity(read_combined_probes(path), {"wds/digits": matrix})
    assert len(joined) == 6  # the row of a dataset without a matrix is left out
    np.testing.assert_allclose(joined["gap"], 0.1 * (1 - joined["similarity"]), atol=1e-12)
    summary = gap_summary(joined).set_index("dataset")
    assert summary.loc["wds/digits", "pearson"] == pytest.approx(-1.0, abs=1e-12)
    assert summary.loc["wds/digits", "spearman"] == pytest.approx(-1.0, abs=1e-12)


def test_missing_and_bad_tables_are_named(tmp_path):
    with pytest.raises(MissingInputError, match="scripts/combined_probe.py"):
        read_combined_probes(tmp_path / "nope.csv")
    path = tmp_path / "bad.csv"
    pd.DataFrame({"dataset": ["x"], "model_a": ["a"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"bad.csv: columns \['model_b'"):
        read_combined_probes(path)
    frame = pd.DataFrame([dict.fromkeys(COMBINED_COLUMNS, "a") | {"top1_a": 0.1,
                          "top1_b": 0.2, "combined_top1": "n/a"}])  # fmt: skip
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="'combined_top1' row 2 is not a number"):
        read_combined_probes(path)
    _, good = _table(tmp_path)
    with pytest.raises(ConfigError, match="no .* row matches the similarity"):
        gap_vs_similarity(read_combined_probes(good), {"other": _matrix()})


def test_repeated_combinations_are_averaged_and_summarised_per_combiner(tmp_path):
    rows = [
        {"dataset": "d", "combiner": c, "model_a": "a", "model_b": b, "combined_top1": top1,
         "top1_a": 0.5, "top1_b": 0.6, "seed": seed}
        for c in ("concat", "ensemble")
        for b in ("b", "c", "e")
        for seed, top1 in ((0, 0.7), (1, 0.8))
    ]  # fmt: skip
    path = tmp_path / "t.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    table = read_combined_probes(path)
    assert len(table) == 6 and set(table["n_runs"]) == {2}
    assert table["combined_top1"].tolist() == pytest.approx([0.75] * 6, abs=1e-15)
    ids = ["a", "b", "c", "e"]
    matrix = pd.DataFrame(np.eye(4), index=ids, columns=ids)
    matrix.loc["a", ["b", "c", "e"]] = [0.1, 0.5, 0.9]
    summary = gap_summary(gap_vs_similarity(table, {"d": matrix}))
    assert summary["combiner"].tolist() == ["concat", "ensemble"]
    assert summary["n_pairs"].tolist() == [3, 3]
    assert summary["mean_gap"].tolist() == pytest.approx([0.15, 0.15], abs=1e-12)
