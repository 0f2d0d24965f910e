"""Branching analysis and soup improvement on small synthetic tables, checked by hand."""

from __future__ import annotations

import numpy as np
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
    sized = basin_summary(branching_tables(*study)["soup_results"], n_test=100)
    # a large difference of means, but without per-image correctness there is no verdict
    assert sized["late_branching_better"] is None and sized["verdict"] == "inconclusive"
    assert "Not tested" in sized["statement"]
    assert sized["difference_in_images"] == pytest.approx(100 * (0.015 + 0.35))
    assert "n = 100 test images" in sized["statement"] and "1.00 pp" in sized["statement"]
    assert "2 run(s) per soup" in sized["statement"]


def _correct(rng: np.random.Generator, n: int, accuracy: float) -> np.ndarray:
    """A 0/1 vector with exactly round(accuracy * n) ones in random positions."""
    out = np.zeros(n)
    out[rng.permutation(n)[: round(accuracy * n)]] = 1
    return out


def _per_image(study, n: int, seed: int = 0) -> np.ndarray:
    """Per soup row: soup correctness minus its two runs' mean, at the tables' accuracies."""
    runs, _, soups = study
    rng = np.random.default_rng(seed)
    rows = []
    for soup in soups.itertuples(index=False):
        members = runs[runs["branch_epoch"] == soup.branch_epoch]["accuracy"]
        mean = np.mean([_correct(rng, n, a) for a in members], axis=0)
        rows.append(_correct(rng, n, soup.soup_accuracy) - mean)
    return np.array(rows)


@pytest.mark.parametrize(
    ("early_soup", "n", "expected", "better"),
    [
        (0.50, 400, "supported", True),  # late − early = +0.37: far outside the noise
        (0.99, 400, "not supported", False),  # early soup beats its runs by +0.14
        (0.84, 100, "inconclusive", None),  # +0.025 on 100 images: the interval straddles 0
    ],
)
def test_verdict_comes_from_the_paired_interval(study, early_soup, n, expected, better):
    runs, distances, soups = study
    soups = soups.assign(soup_accuracy=[early_soup, 0.86, 0.92])
    per_image = _per_image((runs, distances, soups), n)
    results = branching_tables(runs, distances, soups)["soup_results"]
    summary = basin_summary(results, n_test=n, per_image=per_image, n_bootstrap=2000, seed=1)
    assert summary["verdict"] == expected and summary["late_branching_better"] is better
    assert summary["ci_low"] <= summary["difference"] <= summary["ci_high"]
    assert (expected == "inconclusive") == (summary["ci_low"] <= 0 <= summary["ci_high"])
    assert f"is {expected}" in summary["statement"] and summary["n_bootstrap"] == 2000
    late = per_image[1:].mean(axis=0) - per_image[0]  # late = epochs 2 and 4, early = 0
    assert late.mean() == pytest.approx(summary["difference"], abs=1e-12)


def test_per_image_rows_must_match_the_soups(study):
    results = branching_tables(*study)["soup_results"]
    with pytest.raises(ConfigError, match="one row per soup"):
        basin_summary(results, per_image=np.zeros((2, 10)))


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
