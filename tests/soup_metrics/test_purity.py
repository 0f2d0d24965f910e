"""Feature purity: cosine statistics, orthogonality ranking, silhouette and the retention sweep."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import silhouette_score

from sim_consistency.errors import ConfigError, DataError
from sim_consistency.soup_metrics import (
    abs_cosine_stats,
    orthogonality_scores,
    retention_sweep,
    select_dimensions,
    silhouette,
)


def test_orthogonal_rows_have_zero_cosine():
    stats = abs_cosine_stats(np.eye(4) * 3.0)
    assert stats["mean_abs_cos"] == 0.0 and stats["max_abs_cos"] == 0.0 and stats["n_vectors"] == 4


def test_hand_checked_cosines():
    v = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]])
    s = 1 / np.sqrt(2)
    stats = abs_cosine_stats(v)  # pairs: (0,1)=s, (0,2)=0, (1,2)=s
    assert stats["mean_abs_cos"] == pytest.approx(2 * s / 3)
    assert stats["max_abs_cos"] == pytest.approx(s)
    assert stats["median_abs_cos"] == pytest.approx(s)
    np.testing.assert_allclose(orthogonality_scores(v), [s / 2, s, s / 2])
    with pytest.raises(DataError, match=r"\[1\]"):
        abs_cosine_stats(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ConfigError, match="at least 2"):
        abs_cosine_stats(np.ones((1, 3)))


def test_select_dimensions_is_deterministic():
    scores = np.array([0.5, 0.1, 0.5, 0.9, 0.1])
    assert select_dimensions(scores, 2, purity="high").tolist() == [1, 4]
    assert select_dimensions(scores, 2, purity="low").tolist() == [0, 3]
    assert select_dimensions(scores, 5, purity="low").tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match=r"\[1, 5\]"):
        select_dimensions(scores, 6, purity="high")


def test_silhouette_matches_sklearn():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    x = rng.normal(size=(60, 5)) + 3 * np.eye(5)[y]
    assert silhouette(x, y) == pytest.approx(silhouette_score(x, y, metric="cosine"))
    assert silhouette(x, y, metric="euclidean") > 0.2
    with pytest.raises(ConfigError, match="classes"):
        silhouette(x, np.zeros(60))


def test_retention_sweep_endpoint_equals_full_features():
    rng = np.random.default_rng(1)
    y_tr, y_te = np.repeat(np.arange(4), 30), np.repeat(np.arange(4), 15)
    centers = rng.normal(size=(4, 12))
    x_tr = centers[y_tr] + rng.normal(size=(120, 12))
    x_te = centers[y_te] + rng.normal(size=(60, 12))

    def evaluate(a, b):
        clf = LogisticRegression(max_iter=2000).fit(a, y_tr)
        return {"top1": clf.score(b, y_te), "silhouette": silhouette(b, y_te)}

    scores = orthogonality_scores(x_tr.T)
    sweep = retention_sweep(x_tr, x_te, scores, [3, 12], evaluate)
    full = evaluate(x_tr, x_te)
    at_d = sweep[sweep["k"] == 12]
    assert len(at_d) == 2
    assert (at_d["top1"] == full["top1"]).all() and (at_d["silhouette"] == full["silhouette"]).all()
    assert set(sweep["purity"]) == {"high", "low"}
    with pytest.raises(ConfigError, match="width 12"):
        retention_sweep(x_tr, x_te, scores[:5], [3], evaluate)


def test_dead_units_are_skipped_when_asked():
    v = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    stats = abs_cosine_stats(v, skip_zero=True)
    assert stats["n_zero"] == 1 and stats["mean_abs_cos"] == pytest.approx(1 / np.sqrt(2))
    scores = orthogonality_scores(v, skip_zero=True)
    assert np.isinf(scores[1]) and np.isfinite(scores[[0, 2]]).all()
    assert 1 not in select_dimensions(scores, 2, purity="high")
    assert 1 in select_dimensions(scores, 1, purity="low")
