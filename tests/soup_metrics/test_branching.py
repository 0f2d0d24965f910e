"""Branching analysis and soup improvement on small synthetic tables, checked by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from sim_consistency.errors import ConfigError
from sim_consistency.soup_metrics import (
    basin_summary,
    branching_tables,
    id_ood_averages,
    soup_improvement,
)


@pytest.fixture
def study():
    runs = pd.DataFrame(
        [
            # branch epoch 0: far apart runs, soup worse than mean
            ("e0_a", 0, 5, 0.80),
            ("e0_b", 0, 5, 0.90),
            # branch epoch 2
            ("e2_a", 2, 5, 0.85),
            ("e2_b", 2, 5, 0.87),
            # branch epoch 4: close runs, soup better than best
            ("e4_a", 4, 5, 0.88),
            ("e4_b", 4, 5, 0.90),
        ],
        columns=["model_id", "branch_epoch", "analysis_epoch", "accuracy"],
    )
    distances = pd.DataFrame(
        [
            ("e0_a", "e0_b", 10.0),
            ("e2_b", "e2_a", 4.0),
            ("e4_a", "e4_b", 1.0),
            ("e0_a", "e4_a", 9.0),
        ],
        columns=["model_a", "model_b", "l2_distance"],
    )
    soups = pd.DataFrame(
        [(0, 5, "soup_e0", 0.50), (2, 5, "soup_e2", 0.86), (4, 5, "soup_e4", 0.92)],
        columns=["branch_epoch", "analysis_epoch", "soup_id", "soup_accuracy"],
    )
    return runs, distances, soups


def test_branching_tables_by_hand(study):
    tables = branching_tables(*study)
    soups = tables["soup_results"].set_index("soup_id")
    assert soups.loc["soup_e0", "mean_individual_accuracy"] == pytest.approx(0.85)
    assert soups.loc["soup_e0", "improvement_over_mean"] == pytest.approx(-0.35)
    assert soups.loc["soup_e4", "improvement_over_best"] == pytest.approx(0.02)
    assert soups.loc["soup_e2", "mean_l2_distance"] == 4.0
    assert soups["n_models"].tolist() == [2, 2, 2]
    pairs = tables["pairwise_distances"]
    assert len(pairs) == 3  # only pairs within a group; the cross-group distance is ignored
    assert set(pairs["l2_distance"]) == {10.0, 4.0, 1.0}


def test_basin_summary_by_hand(study):
    summary = basin_summary(branching_tables(*study)["soup_results"])
    assert summary["early_epochs"] == [0] and summary["late_epochs"] == [2, 4]
    assert summary["early_improvement"] == pytest.approx(-0.35)
    assert summary["late_improvement"] == pytest.approx((0.0 + 0.03) / 2)
    assert summary["late_branching_better"] is None  # no test-set size: no verdict
    assert summary["spearman_improvement_vs_branch_epoch"] == pytest.approx(1.0)
    assert summary["spearman_distance_vs_branch_epoch"] == pytest.approx(-1.0)
    assert summary["statement"].startswith("Observed: soups of runs forked late (epochs [2, 4]")
    assert "resolution is not stated" in summary["statement"]
    resolved = basin_summary(branching_tables(*study)["soup_results"], n_test=100)
    assert resolved["late_branching_better"] is True
    assert resolved["difference_in_images"] == pytest.approx(100 * (0.015 + 0.35))
    assert "n = 100 test images" in resolved["statement"] and "1.00 pp" in resolved["statement"]
    assert "2 run(s) per soup" in resolved["statement"]


def test_difference_below_one_test_image_is_not_resolved(study):
    soups = branching_tables(*study)["soup_results"].copy()
    # late soups 0.15 pp better than early ones; one image of 360 is 0.28 pp
    soups["improvement_over_mean"] = [0.0010, 0.0025, 0.0025]
    summary = basin_summary(soups, n_test=360)
    assert summary["late_branching_better"] is None
    assert summary["difference_in_images"] == pytest.approx(0.0015 * 360)
    assert "less than one test image: not resolved" in summary["statement"]
    assert "better" not in summary["statement"].split("pp:")[-1]


def test_missing_pair_distance_is_named(study):
    runs, distances, soups = study
    with pytest.raises(ConfigError, match="'e4_a' and 'e4_b'"):
        branching_tables(runs, distances.iloc[:2], soups)


def test_soup_improvement_and_id_ood():
    acc = pd.DataFrame(
        [
            ("soup", "id1", 0.9),
            ("a", "id1", 0.8),
            ("b", "id1", 0.85),
            ("soup", "ood1", 0.6),
            ("a", "ood1", 0.5),
            ("b", "ood1", 0.65),
            ("soup", "ood2", 0.4),
            ("a", "ood2", 0.3),
            ("b", "ood2", 0.3),
        ],
        columns=["model_id", "dataset", "top1"],
    )
    table = soup_improvement(acc, {"soup": ["a", "b"]}, ood_datasets={"ood1", "ood2"}).set_index(
        "dataset"
    )
    assert table.loc["id1", "improvement_over_mean"] == pytest.approx(0.075)
    assert table.loc["ood1", "improvement_over_best"] == pytest.approx(-0.05)
    assert table.loc["ood1", "best_ingredient"] == "b"
    assert bool(table.loc["ood2", "is_ood"]) and not bool(table.loc["id1", "is_ood"])
    avg = id_ood_averages(acc, ood_datasets={"ood1", "ood2"}).set_index("model_id")
    assert avg.loc["soup", "id_avg"] == pytest.approx(0.9)
    assert avg.loc["soup", "ood_avg"] == pytest.approx(0.5)
    assert avg.loc["a", "n_ood"] == 2
    # identical ingredients and soup → zero improvement
    same = pd.DataFrame(
        [("s", "d", 0.7), ("x", "d", 0.7), ("y", "d", 0.7)], columns=["model_id", "dataset", "top1"]
    )
    row = soup_improvement(same, {"s": ["x", "y"]}).iloc[0]
    assert row["improvement_over_mean"] == 0.0 and row["improvement_over_best"] == 0.0
    with pytest.raises(ConfigError, match=r"\['c'\]"):
        soup_improvement(acc, {"soup": ["a", "c"]})
