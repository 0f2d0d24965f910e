"""Hierarchical clustering recovers planted groups of models from real CKA matrices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim_consistency.analysis.clustering import cluster_similarity, dendrogram_figure
from sim_consistency.config.similarity import MetricSpec
from sim_consistency.errors import ConfigError, DataError
from sim_consistency.figures import save_figure
from sim_consistency.similarity import similarity_matrix


def _planted(rng, groups: int = 3, per_group: int = 3, n: int = 120) -> tuple[pd.DataFrame, list]:
    """Linear CKA of models that are noisy rotations of one of ``groups`` base representations."""
    features, truth, ids = [], [], []
    for g in range(groups):
        base = rng.normal(size=(n, 16))
        for i in range(per_group):
            rotation = np.linalg.qr(rng.normal(size=(16, 16)))[0]
            features.append(base @ rotation + 0.3 * rng.normal(size=(n, 16)))
            truth.append(g)
            ids.append(f"g{g}_m{i}")
    spec = MetricSpec(sim_method="cka", sim_kernel="linear", unbiased=True)
    matrix = similarity_matrix(features, spec, normalize=False)
    return pd.DataFrame(matrix, index=ids, columns=ids), truth


@pytest.mark.parametrize("method", ["average", "complete", "single", "weighted"])
def test_planted_groups_are_recovered(method):
    frame, truth = _planted(np.random.default_rng(1))
    result = cluster_similarity(frame, 3, method)
    # Same partition up to renaming: labels and truth determine each other.
    pairs = set(zip(result.labels.tolist(), truth, strict=True))
    assert len(pairs) == 3 == len(set(result.labels))
    labels = result.labels_frame()
    assert list(labels["id"]) == list(frame.index)
    assert sorted(labels["leaf_order"]) == list(range(9))


def test_one_cluster_and_one_per_model():
    frame, _ = _planted(np.random.default_rng(2), groups=2, per_group=2)
    assert set(cluster_similarity(frame, 1).labels) == {1}
    assert sorted(cluster_similarity(frame, 4).labels) == [1, 2, 3, 4]


def test_dendrogram_is_written(tmp_path):
    frame, _ = _planted(np.random.default_rng(3))
    paths = save_figure(dendrogram_figure(cluster_similarity(frame, 3), "planted"), tmp_path / "d")
    assert [p.name for p in paths] == ["d.png", "d.pdf"] and all(p.stat().st_size for p in paths)


def test_bad_input_is_named():
    frame, _ = _planted(np.random.default_rng(4), groups=2, per_group=2)
    with pytest.raises(ConfigError, match="--n_clusters 5: digits has 4 rows"):
        cluster_similarity(frame, 5, where="digits")
    with pytest.raises(ConfigError, match="--linkage: 'ward'"):
        cluster_similarity(frame, 2, "ward")
    frame.iloc[1, 2] = np.nan
    with pytest.raises(DataError, match=r"NaN similarities in the rows of \['g0_m1'\]"):
        cluster_similarity(frame, 2)
