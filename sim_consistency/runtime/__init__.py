"""The stage runtime: a stage is a settings dataclass and four functions; one driver runs them all.

A **stage** is

* a frozen, keyword-only settings dataclass. Its fields declared with :func:`option` are the
  stage's flags: the ``argparse`` parser (help, defaults shown, choices, ``nargs``) is
  generated from them. Shared flags come from reusable field groups — :class:`Models`
  (``--models_config``, ``--model_key``), :class:`Datasets`, :class:`Launcher`
  (``--launcher``, ``--slurm_config``, ``--no_wait``), :class:`Force`, :class:`Device`,
  :class:`Threads`, :class:`Wandb`, :class:`Profile` (``--profile``, filled in by
  :func:`~sim_consistency.runtime.profiles.resolve_profile`); every stage has ``--project_root`` and ``-v``
  (:class:`StageSettings`). A stage inherits only the groups it uses. Fields without
  :func:`option` are derived values that :meth:`StageSettings.validated` fills in.
* ``plan(settings) -> list[item]``: the work items (small picklable dataclasses) whose outputs
  are missing or stale (:mod:`sim_consistency.outputs` decides); ``run(settings, item)``
  writes one item's outputs and returns the written paths; ``outputs(item)`` names them
  (items never share a file); ``label(item)`` names an item in progress lines and logs.
* a :class:`Stage` record tying these together with a one-line description and examples.

:func:`run_stage` is the driver every stage's ``main`` calls: parse → validate → plan → launch
(locally or as SLURM jobs, :mod:`sim_consistency.launch`) → summary (computed / reused /
failed, and where the outputs are), inside a ``--wandb`` run, with user errors printed as one
line and exit code 2, never a traceback (:func:`run_main`).

Keep the module that defines a stage's settings and :class:`Stage` cheap to import: torch,
timm, h5py and pandas are imported inside ``plan``/``run`` (or by the package modules they
call), so ``--help`` answers at once.

The package: :mod:`.flags` (:func:`option`, parser generation), :mod:`.groups` (the shared
field groups), :mod:`.driver` (:class:`Stage`, :func:`run_stage`), :mod:`.boundary` (errors
without tracebacks, logging).

Writing a new stage::

    from dataclasses import dataclass
    from sim_consistency.runtime import Datasets, Force, Launcher, Stage, option, run_stage

    @dataclass(frozen=True, kw_only=True)
    class CountSettings(Datasets, Force, Launcher):
        split: str = option("dataset split to count", default="test")

    @dataclass(frozen=True)
    class Item:
        dataset: str
        output: Path

    def plan(settings: CountSettings) -> list[Item]:
        items = []
        for dataset in settings.datasets:
            output = settings.location.results / "counts" / f"{dataset_slug(dataset)}.json"
            key = json_digest({"dataset": dataset, "split": settings.split})
            if plan_reason(output, key, stored_key(output), force=settings.force):
                items.append(Item(dataset, output))
        return items

    def run(settings: CountSettings, item: Item) -> Path:
        ...  # write item.output atomically, with its content key; return it

    STAGE = Stage(
        name="count", settings=CountSettings, plan=plan, run=run,
        outputs=lambda item: [item.output], label=lambda item: item.dataset,
        description="Count the rows of every dataset split.",
        examples=("python scripts/count.py --datasets wds/digits",),
    )

    def main(argv: Sequence[str] | None = None) -> int:
        return run_stage(STAGE, argv)
"""

from sim_consistency.runtime.boundary import (
    EXIT_TERMINATED,
    configure_logging,
    error_message,
    run_main,
)
from sim_consistency.runtime.driver import Stage, run_stage, run_stage_group
from sim_consistency.runtime.flags import (
    Option,
    add_settings_flags,
    build_parser,
    option,
    settings_from_namespace,
)
from sim_consistency.runtime.groups import (
    Datasets,
    Device,
    Force,
    Launcher,
    Models,
    Profile,
    StageSettings,
    Threads,
    Wandb,
)

__all__ = [
    "EXIT_TERMINATED",
    "Datasets",
    "Device",
    "Force",
    "Launcher",
    "Models",
    "Option",
    "Profile",
    "Stage",
    "StageSettings",
    "Threads",
    "Wandb",
    "add_settings_flags",
    "build_parser",
    "configure_logging",
    "error_message",
    "option",
    "run_main",
    "run_stage",
    "run_stage_group",
    "settings_from_namespace",
]
