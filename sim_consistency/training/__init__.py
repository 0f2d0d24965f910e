"""Training the demo's own small real models: W0, fine-tuned and branched runs on digits.

``study_runs(DEMO_STUDY)`` lists the runs; :func:`train_run` trains one and writes
``models/<id>.safetensors`` + ``models/<id>.json`` (recipe, content key, curve, accuracies,
weight distance); :func:`models_config_entries` is the models config that loads them with the
``checkpoint`` source. The stage ``scripts/train_demo_models.py`` plans and runs them
idempotently.
"""

from __future__ import annotations

from sim_consistency.training.demo import (
    DEMO_STUDY,
    DemoStudy,
    arch_specs,
    load_study,
    models_config_entries,
    study_runs,
    write_models_config,
)
from sim_consistency.training.distances import weight_distance
from sim_consistency.training.loop import (
    SCHEDULES,
    FitOptions,
    deterministic,
    fit,
    learning_rate,
    torch_threads,
)
from sim_consistency.training.runs import (
    ROLES,
    TrainingRun,
    read_checkpoint_metadata,
    run_key,
    stale_reason,
    write_checkpoint,
)
from sim_consistency.training.train import (
    TrainingData,
    load_training_data,
    train_rows,
    train_run,
)

__all__ = [
    "DEMO_STUDY",
    "ROLES",
    "SCHEDULES",
    "DemoStudy",
    "FitOptions",
    "TrainingData",
    "TrainingRun",
    "arch_specs",
    "deterministic",
    "fit",
    "learning_rate",
    "load_study",
    "load_training_data",
    "models_config_entries",
    "read_checkpoint_metadata",
    "run_key",
    "stale_reason",
    "study_runs",
    "train_rows",
    "train_run",
    "torch_threads",
    "weight_distance",
    "write_checkpoint",
    "write_models_config",
]
