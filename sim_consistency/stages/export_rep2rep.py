"""Stage: write our similarity matrices in Rep2Rep's layout, for its notebooks to read unchanged.

``python scripts/export_rep2rep.py --rep2rep_root OUT --datasets … [--methods SLUG …]`` reads
every complete ``model_similarities/<dataset_slug>/<metric_slug>/`` of this project and writes
``OUT/model_similarities/<dataset_slug>/<metric_slug>/`` with exactly Rep2Rep's two files
(its CLI's ``main_model_sim``, ``lciernik/similarity_consistency``, ``sim_consistency/cli.py``):

* ``similarity_matrix.pt`` — ``torch.save`` of the (M, M) float64 ``numpy.ndarray`` (what
  Rep2Rep's ``compute_similarity_matrix`` returns and saves; NaN entries stay NaN);
* ``model_ids.txt`` — the model ids in the matrix's order, one per line.

The folder names are our metric slugs, which are Rep2Rep's method names
(:mod:`sim_consistency.similarity.slugs`), and ``<dataset_slug>`` is Rep2Rep's
``wds_vtab_cifar10`` form. Note for readers: a pickled ndarray is not a plain tensor, so
``torch.load`` from torch 2.6 on needs ``weights_only=False`` (or numpy's reconstruct allowed
with ``torch.serialization.safe_globals``) — as for Rep2Rep's own files. The matrices round-trip
through ``scripts/import_rep2rep.py similarities``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sim_consistency.errors import MissingInputError
from sim_consistency.io import atomic_output, atomic_write_text
from sim_consistency.outputs import stored_key
from sim_consistency.project import dataset_slug
from sim_consistency.runtime import Datasets, Stage, option, run_stage

__all__ = ["STAGE", "ExportSettings", "RESULT_FILES", "export_similarities", "main"]

log = logging.getLogger("sim_consistency.export_rep2rep")

#: The two files of one Rep2Rep similarity folder.
RESULT_FILES = ("similarity_matrix.pt", "model_ids.txt")


@dataclass(frozen=True, kw_only=True)
class ExportSettings(Datasets):
    """Where to write and which datasets and metrics."""

    rep2rep_root: Path = option(
        "Rep2Rep project root to write into (its model_similarities/ folder)",
        default=None,
        required=True,
    )
    methods: tuple[str, ...] | None = option(
        "metric slugs to export", default=None, nargs="+", shown_default="every complete one"
    )


def export_similarities(
    settings: ExportSettings, dataset: str
) -> list[Path]:  # one dataset: every metric
    """Write every complete matrix of ``dataset`` in Rep2Rep's layout; return the folders.

    Raises:
        MissingInputError: no complete matrix for the dataset (or none of ``--methods``).
    """
    import torch

    from sim_consistency.similarity.matrix_files import MATRIX_H5, read_similarity_matrix

    source = settings.location.model_similarities / dataset_slug(dataset)
    folders = sorted(
        p.parent for p in source.glob(f"*/{MATRIX_H5}") if stored_key(p.parent) is not None
    )
    if settings.methods:
        unknown = sorted(set(settings.methods) - {f.name for f in folders})
        if unknown:
            raise MissingInputError(
                f"{source}: no complete similarity matrix for --methods {' '.join(unknown)} "
                f"(found: {', '.join(f.name for f in folders) or 'none'}). Run "
                "scripts/distance_matrix_computation.py first."
            )
        folders = [f for f in folders if f.name in settings.methods]
    if not folders:
        raise MissingInputError(
            f"{source}: no complete similarity matrix to export; run "
            "scripts/distance_matrix_computation.py first."
        )
    written = []
    for folder in folders:
        frame = read_similarity_matrix(folder)
        matrix = frame.to_numpy(dtype="float64")
        out = (
            Path(settings.rep2rep_root) / "model_similarities" / dataset_slug(dataset) / folder.name
        )
        with atomic_output(out / RESULT_FILES[0], needed=matrix.nbytes, what="the matrix") as tmp:
            torch.save(matrix, tmp)
        atomic_write_text(out / RESULT_FILES[1], "".join(f"{m}\n" for m in frame.index))
        log.info("%s -> %s", folder, out)
        written.append(out)
    return written


STAGE = Stage(
    name="export_rep2rep",
    settings=ExportSettings,
    description="Write our similarity matrices in Rep2Rep's layout (similarity_matrix.pt + "
    "model_ids.txt).",
    details="Writes <rep2rep_root>/model_similarities/<dataset_slug>/<metric_slug>/ from every "
    "complete matrix of model_similarities/; Rep2Rep's notebooks read it unchanged.",
    examples=(
        "python scripts/export_rep2rep.py --rep2rep_root ../rep2rep_project --datasets wds/digits",
        "python scripts/export_rep2rep.py --rep2rep_root OUT --datasets D.txt "
        "--methods cka_kernel_linear_unbiased rsa_method_cosine",
    ),
    plan=lambda settings: list(settings.datasets),
    run=export_similarities,
    outputs=lambda dataset: [],
    label=str,
    output_root=lambda settings: Path(settings.rep2rep_root) / "model_similarities",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Export; print a summary. Returns the exit code."""
    return run_stage(STAGE, argv)
