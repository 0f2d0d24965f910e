"""Flags and paths shared by the stages that build on single-model probes (combined, transfer).

:class:`ProbeRuns` holds the protocol flags that name a single-model result folder
(``--protocol``, ``--search``, ``--seeds``, ``--val_proportion``, the splits, and
``--profile rep2rep``, which sets Rep2Rep's protocol, search and seeds as it does for
``single_model_evaluation``); :func:`single_model_dir` gives that folder, the one
``single_model_evaluation`` writes with the same flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim_consistency.errors import ConfigError, MissingInputError
from sim_consistency.outputs import read_json_record
from sim_consistency.project import ProjectLocation, dataset_slug
from sim_consistency.runtime import option
from sim_consistency.stages.single_model_evaluation import ProbeProtocol

__all__ = ["ProbeRuns", "read_single_model_result", "single_model_dir"]


@dataclass(frozen=True, kw_only=True)
class ProbeRuns(ProbeProtocol):
    """:class:`ProbeProtocol`'s flags plus ``--val_proportion`` (a search is needed here)."""

    val_proportion: float = option("validation fraction of train", default=0.2, type=float)
    epochs: int = 20
    batch_size: int = 1024

    def validated(self):
        s = super().validated().with_defaults()
        if not 0.0 < s.val_proportion < 1.0:
            raise ConfigError(f"--val_proportion must be in (0, 1) (got {s.val_proportion}).")
        return s.with_seeds()

    def slug(self, seed: int) -> str:
        """The result folder name of one seed (:func:`~sim_consistency.probe.hp_slug`)."""
        from sim_consistency.probe.result_folders import hp_slug

        return hp_slug(self.protocol, seed, val_proportion=self.val_proportion, search=self.search)

    def hyper_parameters(self, seed: int) -> dict[str, Any]:
        """The settings that determine one seed's probe (for content keys)."""
        from sim_consistency.probe import REP2REP_LRS, WEIGHT_DECAY_GRID

        hp: dict[str, Any] = {
            "protocol": self.protocol,
            "seed": seed,
            "val_proportion": self.val_proportion,
            "weight_decay_grid": [float(x) for x in WEIGHT_DECAY_GRID],
            "train_split": self.train_split,
            "test_split": self.test_split,
        }
        if self.protocol == "rep2rep":
            hp.update(lrs=list(REP2REP_LRS), epochs=self.epochs, batch_size=self.batch_size)
        if self.search != "simc":  # as single_model_evaluation: simc keys stay as they were
            hp["search"] = self.search
        return hp


def single_model_dir(location: ProjectLocation, dataset: str, model_id: str, slug: str) -> Path:
    """``results/linear_probe/single_model/<dataset_slug>/<model_id>/<slug>``."""
    return location.linear_probe / "single_model" / dataset_slug(dataset) / model_id / slug


def read_single_model_result(folder: Path, *, needs: str, rerun: str) -> dict[str, Any]:
    """Return a complete single-model ``results.json`` that records its stored files.

    Raises:
        MissingInputError: no complete result there, or one from before probes were stored
            (the message says which command rebuilds it).
    """
    record = read_json_record(folder / "results.json")
    if record is None or "content_key" not in record:
        raise MissingInputError(
            f"{folder}: no single-model probe result, which {needs} needs. Run first: {rerun}"
        )
    if not record.get("stored_files"):
        raise MissingInputError(
            f"{folder}: the result predates stored probes (no probe_weights.safetensors / "
            f"test_predictions.npz). Re-run: {rerun}"
        )
    return record
