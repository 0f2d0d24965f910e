"""Aggregation with the stages' intervals: probe summaries and figures carry them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim_consistency.aggregate import plot_accuracy_vs_depth, plot_soup_improvement, probe_summary
from sim_consistency.probe.evaluation import top1_interval
from sim_consistency.soup_metrics import soup_improvement, soup_paired_tests


def _probe_rows(n_test: int = 200) -> pd.DataFrame:
    rows = []
    for seed, correct in ((0, 150), (1, 160)):
        for depth, block_index in ((0.5, 0), (1.0, 1)):
            top1 = (correct - 40 * (depth < 1)) / n_test
            rows.append(
                {"kind": "probe", "dataset": "wds/digits", "model_id": "m", "seed": seed,
                 "depth_fraction": depth, "block_index": block_index, "top1": top1,
                 **top1_interval(top1, n_test)}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_probe_summary_puts_seed_spread_and_test_interval_side_by_side():
    rows = _probe_rows()
    summary = probe_summary(rows).iloc[0]
    last = rows[rows["block_index"] == 1]
    assert summary["top1_mean"] == pytest.approx(0.775)
    assert summary["top1_std"] == pytest.approx(np.std([0.75, 0.8], ddof=1))
    half = ((last["top1_ci_high"] - last["top1_ci_low"]) / 2).mean()
    assert summary["top1_ci_halfwidth"] == pytest.approx(half)
    assert 0.05 < half < 0.07  # Wilson at n = 200, p ≈ 0.78: ≈ ±0.058
    assert "top1_ci_halfwidth" not in probe_summary(rows.drop(columns=["top1_ci_low"]))


def test_accuracy_and_soup_figures_draw_the_intervals(tmp_path):
    import matplotlib.image

    paths = plot_accuracy_vs_depth(_probe_rows(), tmp_path)
    assert len(paths) == 1 and matplotlib.image.imread(paths[0]).size > 0
    rng = np.random.default_rng(0)
    correct = {(m, "d"): (rng.uniform(size=300) < p).astype(float)
               for m, p in (("soup", 0.8), ("a", 0.7), ("b", 0.6))}  # fmt: skip
    accuracy = pd.DataFrame(
        [(m, d, c.mean()) for (m, d), c in correct.items()], columns=["model_id", "dataset", "top1"]
    )
    soups = {"soup": ["a", "b"]}
    table = soup_paired_tests(soup_improvement(accuracy, soups), soups, correct, n_bootstrap=200)
    path = plot_soup_improvement(table, tmp_path, n_test=300)
    assert path.is_file() and matplotlib.image.imread(path).size > 0
    row = table.iloc[0]
    assert row["over_best_ci_low"] <= row["improvement_over_best"] <= row["over_best_ci_high"]
