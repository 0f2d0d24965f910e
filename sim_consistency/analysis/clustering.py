"""Hierarchical clustering of a similarity matrix (models by representation, or datasets).

A similarity ``S`` (CKA, RSA, mutual k-NN, or a consistency table — all at most 1) becomes the
distance ``1 − S`` (symmetrised, 0 on the diagonal), which :func:`scipy.cluster.hierarchy.linkage`
clusters (``average`` linkage by default, as a UPGMA dendrogram of Rep2Rep's figures);
:func:`scipy.cluster.hierarchy.fcluster` cuts the tree into ``n_clusters`` flat clusters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sim_consistency.errors import ConfigError, DataError

__all__ = ["LINKAGES", "Clustering", "cluster_similarity", "dendrogram_figure"]

#: The linkage methods offered (those valid on a non-Euclidean distance matrix).
LINKAGES: tuple[str, ...] = ("average", "complete", "single", "weighted")


@dataclass(frozen=True)
class Clustering:
    """A clustering: the linkage matrix, the labels and the ids in matrix order."""

    ids: list[str]
    linkage: np.ndarray
    labels: np.ndarray  # 1-based flat cluster per id
    method: str

    def labels_frame(self) -> pd.DataFrame:
        """Rows ``id, cluster, leaf_order`` (leaf_order: position in the dendrogram)."""
        from scipy.cluster.hierarchy import leaves_list

        order = np.empty(len(self.ids), dtype=int)
        order[leaves_list(self.linkage)] = np.arange(len(self.ids))
        return pd.DataFrame({"id": self.ids, "cluster": self.labels, "leaf_order": order})


def cluster_similarity(
    frame: pd.DataFrame, n_clusters: int, method: str = "average", *, where: str = "matrix"
) -> Clustering:
    """Cluster the rows of a square similarity DataFrame with distance ``1 − S``.

    Raises:
        ConfigError: an unknown ``method``, or ``n_clusters`` outside [1, number of ids].
        DataError: fewer than 2 ids, or NaN entries (``where`` names the matrix).
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    if method not in LINKAGES:
        raise ConfigError(f"--linkage: {method!r} is not one of {list(LINKAGES)}.")
    ids = [str(i) for i in frame.index]
    if len(ids) < 2:
        raise DataError(f"clustering {where}: needs at least 2 rows (got {ids}).")
    if not 1 <= n_clusters <= len(ids):
        raise ConfigError(
            f"--n_clusters {n_clusters}: {where} has {len(ids)} rows; choose 1..{len(ids)}."
        )
    values = frame.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        bad = [ids[i] for i in sorted(set(np.argwhere(~np.isfinite(values))[:, 0]))]
        raise DataError(f"clustering {where}: NaN similarities in the rows of {bad}.")
    distance = 1.0 - (values + values.T) / 2.0
    np.fill_diagonal(distance, 0.0)
    distance = np.clip(distance, 0.0, None)  # values above 1 by rounding
    tree = linkage(squareform(distance, checks=False), method=method)
    labels = fcluster(tree, t=n_clusters, criterion="maxclust")
    return Clustering(ids, tree, labels, method)


def dendrogram_figure(clustering: Clustering, title: str) -> Any:
    """Return a figure of the dendrogram (leaves coloured by flat cluster)."""
    from scipy.cluster.hierarchy import dendrogram

    from sim_consistency.figures import subplots

    n = len(clustering.ids)
    fig, ax = subplots(figsize=(max(4.0, 0.35 * n + 2.0), 4.0))
    k = int(clustering.labels.max())
    threshold = (
        clustering.linkage[-(k - 1), 2] if 1 < k <= len(clustering.linkage) else 0
    )  # the height where the tree is cut into k clusters
    dendrogram(
        clustering.linkage,
        labels=clustering.ids,
        ax=ax,
        leaf_rotation=90,
        color_threshold=threshold,
        above_threshold_color="grey",
    )
    ax.set_ylabel("distance 1 − similarity")
    ax.set_title(f"{title} ({clustering.method} linkage, {k} clusters)")
    return fig
