"""The files of one similarity-matrix folder: their names, the writer and the reader.

``model_similarities/<dataset_slug>/<metric_slug>/`` holds ``model_ids.txt`` (matrix order),
``similarity_matrix.h5`` (``/similarity_matrix``, ``/model_ids``; with intervals also ``/se``,
``/ci_low``, ``/ci_high`` (M, M) and ``/ci_groups`` (n,)), ``similarity_matrix.csv`` (the same
matrix), with intervals the long ``similarity_ci.csv``, and ``metadata.json``, written last: a
folder without it is unfinished and never read. The stage draws no figure, with or without
intervals; the aggregation's similarity heatmaps show the intervals
(:func:`~sim_consistency.aggregate.plot_similarity_heatmaps`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sim_consistency.errors import MissingInputError
from sim_consistency.io import atomic_output, atomic_write_json, atomic_write_text
from sim_consistency.outputs import METADATA_FILE, stored_key

if TYPE_CHECKING:
    import pandas as pd

    from sim_consistency.uncertainty import Interval

__all__ = [
    "MATRIX_CI_CSV",
    "MATRIX_CI_FIGURE",
    "MATRIX_CSV",
    "MATRIX_H5",
    "MODEL_IDS",
    "ci_table",
    "read_similarity_matrix",
    "write_similarity_matrix",
]

MATRIX_H5 = "similarity_matrix.h5"
MATRIX_CSV = "similarity_matrix.csv"
MODEL_IDS = "model_ids.txt"
#: Long table of a matrix with its intervals (written with ``--ci``).
MATRIX_CI_CSV = "similarity_ci.csv"
#: Heatmap of a matrix with its intervals (written with ``--ci``), ``.png`` and ``.pdf``.
#: Stem of the interval heatmap earlier versions drew here (removed when a folder is rewritten).
MATRIX_CI_FIGURE = "similarity_ci"


def read_similarity_matrix(folder: Path) -> pd.DataFrame:
    """Return the (M, M) matrix stored in ``folder`` as a DataFrame indexed by model id.

    Raises:
        MissingInputError: the folder has no complete matrix (no ``metadata.json``, written
            last, or no HDF5 file).
    """
    import h5py
    import pandas as pd

    path = folder / MATRIX_H5
    if not path.is_file() or stored_key(folder) is None:
        raise MissingInputError(
            f"{folder}: no complete similarity matrix ({MATRIX_H5} + {METADATA_FILE}); run "
            "scripts/distance_matrix_computation.py for this dataset and metric first."
        )
    with h5py.File(path, "r") as f:
        matrix = f["similarity_matrix"][()]
        ids = list(f["model_ids"].asstr()[()])
    return pd.DataFrame(matrix, index=ids, columns=ids)


def write_similarity_matrix(
    folder: Path,
    matrix: np.ndarray,
    model_ids: Sequence[str],
    metadata: Mapping[str, Any],
    interval: Interval | None = None,
) -> None:
    """Write ``model_ids.txt``, the matrix as HDF5 and CSV, then ``metadata.json`` (last).

    With ``interval`` (``--ci``) the HDF5 file also holds ``se``, ``ci_low``, ``ci_high`` (M, M)
    and ``ci_groups`` (n,), and ``similarity_ci.csv`` (long: one row per ordered model pair)
    is written (a ``similarity_ci`` heatmap of an earlier version is removed). The old ``metadata.json`` is removed first,
    so a run that dies half-way leaves a folder without a content key, which the next plan
    rebuilds instead of trusting.
    """
    import h5py
    import pandas as pd

    (folder / METADATA_FILE).unlink(missing_ok=True)
    for stale in (MATRIX_CI_CSV, MATRIX_CI_FIGURE + ".png", MATRIX_CI_FIGURE + ".pdf"):
        (folder / stale).unlink(missing_ok=True)
    atomic_write_text(folder / MODEL_IDS, "\n".join(model_ids) + "\n")
    needed = matrix.nbytes * (4 if interval is not None else 1)
    with (
        atomic_output(folder / MATRIX_H5, needed=needed, what="the matrix") as tmp,
        h5py.File(tmp, "w", locking=False) as f,
    ):
        f.create_dataset("similarity_matrix", data=matrix)
        f.create_dataset("model_ids", data=list(model_ids), dtype=h5py.string_dtype())
        if interval is not None:
            for name in ("se", "ci_low", "ci_high"):
                f.create_dataset(name, data=getattr(interval, name))
            f.create_dataset("ci_groups", data=interval.groups)
            f.attrs["ci_method"] = interval.method
            f.attrs["ci_level"] = interval.level
        f.attrs["metric_slug"] = metadata["metric_slug"]
        f.attrs["content_key"] = metadata["content_key"]
    frame = pd.DataFrame(matrix, index=list(model_ids), columns=list(model_ids))
    atomic_write_text(folder / MATRIX_CSV, frame.to_csv(index_label="model_id"))
    if interval is not None:
        atomic_write_text(
            folder / MATRIX_CI_CSV, ci_table(matrix, interval, model_ids).to_csv(index=False)
        )
    atomic_write_json(folder / METADATA_FILE, metadata)


def ci_table(matrix: np.ndarray, interval: Interval, model_ids: Sequence[str]) -> pd.DataFrame:
    """Return the long table: ``model_a, model_b, similarity, se, ci_low, ci_high``."""
    import pandas as pd

    m = len(model_ids)
    a, b = np.divmod(np.arange(m * m), m)
    return pd.DataFrame(
        {
            "model_a": np.asarray(model_ids, dtype=object)[a],
            "model_b": np.asarray(model_ids, dtype=object)[b],
            "similarity": matrix.ravel(),
            "se": np.asarray(interval.se).ravel(),
            "ci_low": np.asarray(interval.ci_low).ravel(),
            "ci_high": np.asarray(interval.ci_high).ravel(),
        }
    )
