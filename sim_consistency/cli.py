"""The ``simc`` command: one sub-command per stage script, plus ``simc datasets …``.

``simc <command> [flags]`` runs exactly what ``python scripts/<script>.py [flags]`` runs: the
same stage module's ``main(argv)``, so flags, help, outputs and exit codes are the same (only
the program name in the usage line reads ``simc <command>``). The table :data:`COMMANDS` maps
each command to its stage module *by name* and holds its one-line description, so ``simc
--help`` and ``simc <command> --help`` import no stage module, torch, timm or h5py themselves:
a stage module is imported (``importlib``) only when its command runs.

Commands::

    simc extract            scripts/feature_extraction.py
    simc evaluate           scripts/single_model_evaluation.py
    simc combined           scripts/combined_probe.py
    simc transfer           scripts/probe_transfer.py
    simc similarity         scripts/distance_matrix_computation.py
    simc layer-cka          scripts/layer_cka.py
    simc consistency        scripts/consistency.py
    simc analyses           scripts/analyses.py
    simc soup-metrics       scripts/soup_metrics.py
    simc build-variants     scripts/build_variants.py
    simc train-demo-models  scripts/train_demo_models.py
    simc import-rep2rep     scripts/import_rep2rep.py
    simc export-rep2rep     scripts/export_rep2rep.py
    simc demo               scripts/demo.py
    simc datasets check     validate a dataset folder (sim_consistency.data.check)
    simc datasets download  scripts/download_ds/download_webdatasets.py
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["COMMANDS", "DATASETS_COMMANDS", "Command", "main"]


@dataclass(frozen=True)
class Command:
    """One ``simc`` sub-command: the module whose ``main(argv)`` it runs, and what it does.

    Attributes:
        module: dotted module path, imported only when the command runs.
        script: the equivalent script, relative to the repository root.
        description: the one line ``simc --help`` shows.
    """

    module: str
    script: str
    description: str


#: ``simc <command>`` -> the stage it runs (order = the order of a study).
COMMANDS: dict[str, Command] = {
    "train-demo-models": Command(
        "sim_consistency.stages.train_demo_models",
        "scripts/train_demo_models.py",
        "train the demo's small real models on digits (W0, fine-tuned, branched runs)",
    ),
    "build-variants": Command(
        "sim_consistency.stages.build_variants",
        "scripts/build_variants.py",
        "materialise the variants of a models config (soups, MonoSoup, WiSE-FT, TIES, ...)",
    ),
    "extract": Command(
        "sim_consistency.stages.feature_extraction",
        "scripts/feature_extraction.py",
        "extract block-wise features of every model and dataset split into the HDF5 cache",
    ),
    "evaluate": Command(
        "sim_consistency.stages.single_model_evaluation",
        "scripts/single_model_evaluation.py",
        "linear probes on cached features; score the models' own heads",
    ),
    "combined": Command(
        "sim_consistency.stages.combined_probe",
        "scripts/combined_probe.py",
        "probes of model sets: concatenated features (concat, concat_pca) and ensembles",
    ),
    "transfer": Command(
        "sim_consistency.stages.probe_transfer",
        "scripts/probe_transfer.py",
        "score probes trained on one dataset on others (ImageNet-A/-R/-V2/-Sketch class maps)",
    ),
    "similarity": Command(
        "sim_consistency.stages.distance_matrix_computation",
        "scripts/distance_matrix_computation.py",
        "model x model similarity matrices (CKA, RSA, mutual k-NN) per dataset and metric",
    ),
    "layer-cka": Command(
        "sim_consistency.stages.layer_cka",
        "scripts/layer_cka.py",
        "block x block linear CKA grids between a reference model and the others",
    ),
    "consistency": Command(
        "sim_consistency.stages.consistency",
        "scripts/consistency.py",
        "Rep2Rep consistency: correlate similarity matrices across datasets",
    ),
    "analyses": Command(
        "sim_consistency.stages.analyses",
        "scripts/analyses.py",
        "the Rep2Rep paper's analyses: categories, clustering, sample size, random sets, ...",
    ),
    "soup-metrics": Command(
        "sim_consistency.stages.soup_metrics",
        "scripts/soup_metrics.py",
        "compare soups with their ingredients (accuracy, CKA, weights, barriers, purity)",
    ),
    "import-rep2rep": Command(
        "sim_consistency.stages.import_rep2rep",
        "scripts/import_rep2rep.py",
        "import Rep2Rep's stored features or similarity matrices into this project",
    ),
    "export-rep2rep": Command(
        "sim_consistency.stages.export_rep2rep",
        "scripts/export_rep2rep.py",
        "write our similarity matrices in Rep2Rep's layout for its notebooks",
    ),
    "demo": Command(
        "sim_consistency.stages.demo",
        "scripts/demo.py",
        "run the whole demo pipeline on the embedded digits data (what `make demo` runs)",
    ),
}

#: ``simc datasets <command>``.
DATASETS_COMMANDS: dict[str, Command] = {
    "check": Command(
        "sim_consistency.data.check",
        "",
        "validate a dataset folder (webdataset shards or image folder) and name what is broken",
    ),
    "download": Command(
        "sim_consistency.data.download",
        "scripts/download_ds/download_webdatasets.py",
        "download CLIP_benchmark webdatasets into <root>/datasets/wds/",
    ),
}

_HELP_FLAGS = ("-h", "--help")


def _listing(commands: dict[str, Command], prefix: str) -> str:
    width = max(len(prefix + name) for name in commands)
    return "\n".join(
        f"  {prefix + name:<{width}}  {command.description}" for name, command in commands.items()
    )


def _usage() -> str:
    from sim_consistency import __version__

    return (
        "usage: simc [-h] [--version] <command> [flags]\n\n"
        f"sim-consistency {__version__}: representation analysis of image models and model "
        "merges.\nEach command runs the stage script of the same name with the same flags; "
        "`simc <command> --help` lists them.\n\n"
        f"commands:\n{_listing(COMMANDS, '')}\n{_listing(DATASETS_COMMANDS, 'datasets ')}\n\n"
        "options:\n  -h, --help  show this help message and exit\n"
        "  --version   print the version and exit\n\n"
        "Examples:\n"
        "  simc demo --quick\n"
        "  simc extract --models_config configs/models/demo.json --datasets wds/digits "
        "--max_samples 500\n"
        "  simc datasets check ~/data/wds_vtab-cifar10\n"
    )


@contextmanager
def _program_name(name: str) -> Iterator[None]:
    """Make argparse name the program ``name`` (its default ``prog`` is ``sys.argv[0]``)."""
    saved = sys.argv[:]
    sys.argv[:1] = [name]
    try:
        yield
    finally:
        sys.argv[:] = saved


def _unknown(word: str, names: list[str], prefix: str) -> int:
    close = difflib.get_close_matches(word, names, n=1)
    hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
    print(
        f"simc: unknown command '{prefix}{word}'.{hint} Commands: "
        f"{', '.join(prefix + name for name in names)} (simc --help describes them).",
        file=sys.stderr,
    )
    return 2


def _run(command: Command, name: str, argv: list[str]) -> int:
    module = importlib.import_module(command.module)
    with _program_name(name):
        result = module.main(argv)
    return int(result or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``simc``: dispatch ``argv`` to the sub-command's module; return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in _HELP_FLAGS:  # no command: the usage, as an error
        print(_usage(), end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    if args[0] == "--version":
        from sim_consistency import __version__

        print(f"simc (sim-consistency) {__version__}")
        return 0
    word, rest = args[0], args[1:]
    if word == "datasets":
        if not rest or rest[0] in _HELP_FLAGS:
            print(
                "usage: simc datasets <command> [flags]\n\ncommands:\n"
                f"{_listing(DATASETS_COMMANDS, '')}\n",
                end="",
                file=sys.stdout if rest else sys.stderr,
            )
            return 0 if rest else 2
        if rest[0] not in DATASETS_COMMANDS:
            return _unknown(rest[0], list(DATASETS_COMMANDS), "datasets ")
        return _run(DATASETS_COMMANDS[rest[0]], f"simc datasets {rest[0]}", rest[1:])
    if word not in COMMANDS:
        return _unknown(word, [*COMMANDS, "datasets"], "")
    return _run(COMMANDS[word], f"simc {word}", rest)


if __name__ == "__main__":
    raise SystemExit(main())
