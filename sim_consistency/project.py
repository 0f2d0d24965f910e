"""Where a project's data, caches and results live on disk.

The root is chosen as ``--project_root`` flag > ``SIMC_ROOT`` environment variable >
``project_root`` in the default folder: the repository checkout the package runs from (the
folder holding ``project_location.py``), or the current directory when the package is installed
without a checkout (e.g. the container image). Every stage, notebook and test gets its paths from
:class:`ProjectLocation`, never from string literals, so a notebook that Jupyter starts in
``notebooks/`` finds the same study as ``make demo`` and the stages run from the checkout, and
moving a study is a matter of pointing ``SIMC_ROOT`` elsewhere.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ProjectLocation",
    "resolve_project_root",
    "default_root_parent",
    "dataset_slug",
    "ENV_VAR",
    "DEFAULT_ROOT",
]

ENV_VAR = "SIMC_ROOT"
DEFAULT_ROOT = "project_root"
#: The checkout this package runs from, when it runs from one (an editable install).
_CHECKOUT = Path(__file__).resolve().parents[1]


def default_root_parent() -> Path:
    """Return the folder the default ``project_root`` lives in.

    The repository checkout when the package runs from one (identified by its
    ``project_location.py``), else the current directory. The checkout does not depend on where
    a process starts, so stages, notebooks (started by Jupyter in ``notebooks/``) and tests all
    find the same root.
    """
    if (_CHECKOUT / "project_location.py").is_file() and (_CHECKOUT / "pyproject.toml").is_file():
        return _CHECKOUT
    return Path.cwd()


def resolve_project_root(project_root: str | os.PathLike | None = None) -> Path:
    """Return the project root: the argument if given, else ``$SIMC_ROOT``, else the default.

    The default is ``project_root`` in :func:`default_root_parent` (the checkout, else the
    current directory, said in a warning since another directory gives another root). A relative argument or ``$SIMC_ROOT`` is taken relative to the current
    directory, as a shell user expects. The result is absolute so it can be shipped to SLURM
    jobs that start elsewhere.
    """
    if project_root is not None and str(project_root) != "":
        chosen = Path(project_root)
    elif os.environ.get(ENV_VAR):
        chosen = Path(os.environ[ENV_VAR])
    else:
        chosen = default_root_parent() / DEFAULT_ROOT
        if chosen.parent != _CHECKOUT:
            logging.getLogger("sim_consistency").warning(
                "project root: %s (no repository checkout to hold it, so the current "
                "directory's; pass --project_root or set $%s to choose it)",
                chosen.resolve(),
                ENV_VAR,
            )
    return chosen.expanduser().resolve()


def dataset_slug(dataset: str) -> str:
    """Return the folder name of a dataset: ``wds/vtab/cifar10`` -> ``wds_vtab_cifar10``."""
    return dataset.replace("/", "_").replace(":", "_")


@dataclass(frozen=True)
class ProjectLocation:
    """The folders of one project root (DESIGN.md, "Project root").

    Attributes are absolute paths; :meth:`create` makes them. Per-dataset helpers build the
    paths of individual outputs so their layout is written down in exactly one place.
    """

    root: Path

    @classmethod
    def resolve(cls, project_root: str | os.PathLike | None = None) -> ProjectLocation:
        """Build a location from a flag value (or ``None``) with the documented precedence."""
        return cls(resolve_project_root(project_root))

    # -- top-level folders -------------------------------------------------------------------
    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def wds(self) -> Path:
        return self.datasets / "wds"

    @property
    def subsets(self) -> Path:
        return self.datasets / "subsets"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def model_similarities(self) -> Path:
        return self.root / "model_similarities"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def layer_cka(self) -> Path:
        return self.results / "layer_cka"

    @property
    def linear_probe(self) -> Path:
        return self.results / "linear_probe"

    @property
    def soup_metrics(self) -> Path:
        return self.results / "soup_metrics"

    @property
    def consistency(self) -> Path:
        return self.results / "consistency"

    @property
    def aggregated(self) -> Path:
        return self.results / "aggregated"

    @property
    def plots(self) -> Path:
        return self.results / "plots"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def folders(self) -> dict[str, Path]:
        """Return every named folder of the layout, in a stable order."""
        names = [
            "root",
            "datasets",
            "wds",
            "subsets",
            "models",
            "features",
            "model_similarities",
            "results",
            "layer_cka",
            "linear_probe",
            "soup_metrics",
            "consistency",
            "aggregated",
            "plots",
            "logs",
        ]
        return {name: getattr(self, name) for name in names}

    def create(self) -> ProjectLocation:
        """Create every folder of the layout (idempotent) and return ``self``."""
        for path in self.folders().values():
            path.mkdir(parents=True, exist_ok=True)
        return self

    # -- per-output paths --------------------------------------------------------------------
    def wds_dataset_dir(self, name: str) -> Path:
        """Folder of webdataset ``wds/<name>``: ``datasets/wds/wds_<name, '/' -> '-'>``.

        This is CLIP_benchmark's naming (``wds/vtab/cifar10`` lives in ``wds_vtab-cifar10``).
        """
        return self.wds / f"wds_{name.replace('/', '-')}"

    def subset_indices_file(self, dataset: str, split: str) -> Path:
        """``datasets/subsets/<dataset_slug>/subset_indices_<split>.json``."""
        return self.subsets / dataset_slug(dataset) / f"subset_indices_{split}.json"

    def feature_file(self, dataset: str, split: str, model_id: str) -> Path:
        """``features/<dataset_slug>/<split>/<model_id>.h5``."""
        return self.features / dataset_slug(dataset) / split / f"{model_id}.h5"

    def similarity_dir(self, dataset: str, metric_slug: str) -> Path:
        """``model_similarities/<dataset_slug>/<metric_slug>``."""
        return self.model_similarities / dataset_slug(dataset) / metric_slug

    def model_weights_file(self, model_id: str) -> Path:
        """``models/<model_id>.safetensors`` (a materialised variant)."""
        return self.models / f"{model_id}.safetensors"

    def model_recipe_file(self, model_id: str) -> Path:
        """``models/<model_id>.json`` (recipe, ingredient digests, logs, statistics)."""
        return self.models / f"{model_id}.json"
