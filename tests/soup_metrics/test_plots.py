"""Soup-metrics figures: what each line joins."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim_consistency.soup_metrics.plots import plot_barrier_curves


def _curves() -> pd.DataFrame:
    alphas = np.linspace(0, 1, 5)
    rows = []
    # Rows interleaved across datasets (as the stage writes them per α would be the worst case).
    for alpha in alphas[::-1]:
        for dataset, offset in (("wds/digits", 0.0), ("wds/digits_noisy", 0.5)):
            for pair, scale in ((("a", "b"), 0.1), (("a", "c"), 0.2)):
                rows.append(
                    {
                        "dataset": dataset,
                        "model_a": pair[0],
                        "model_b": pair[1],
                        "alpha": alpha,
                        "error": offset + scale * alpha * (1 - alpha),
                        "loss": offset + scale,
                    }
                )
    return pd.DataFrame(rows)


def test_one_line_per_dataset_and_pair_in_alpha_order():
    curves = _curves()
    fig = plot_barrier_curves(curves, "error")
    axes = fig.axes
    assert [ax.get_title().split("— ")[-1] for ax in axes] == ["wds/digits", "wds/digits_noisy"]
    for ax, offset in zip(axes, (0.0, 0.5), strict=True):
        lines = ax.get_lines()
        assert len(lines) == 2
        for line, scale in zip(lines, (0.1, 0.2), strict=True):
            x, y = line.get_xdata(), line.get_ydata()
            assert np.all(np.diff(x) > 0)  # α increases along the line: no zig-zag
            np.testing.assert_allclose(y, offset + scale * x * (1 - x))
        assert ax.get_ylabel().startswith("test error")
    # distinguishable: the two pairs differ in marker
    assert axes[0].get_lines()[0].get_marker() != axes[0].get_lines()[1].get_marker()
