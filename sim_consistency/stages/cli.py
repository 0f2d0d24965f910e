"""The hand-written flag set of the soup-metrics stage, until it is ported to the runtime.

Every other stage generates its parser from its settings (:mod:`sim_consistency.runtime`, which
also owns :func:`run_main`, re-exported here); delete this module once ``soup_metrics`` is a
runtime stage.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from sim_consistency.errors import SimcError
from sim_consistency.runtime import configure_logging, error_message, run_main
from sim_consistency.threads import set_torch_threads

__all__ = [
    "add_common_arguments",
    "configure_logging",
    "error_message",
    "parse_stage_args",
    "run_main",
]


def add_common_arguments(parser: argparse.ArgumentParser, *, needs_models: bool = True) -> None:
    """Add the flags every stage shares (DESIGN.md, "Staged scripts")."""
    parser.add_argument(
        "--project_root",
        default=None,
        help="project root (default: $SIMC_ROOT, else project_root in the checkout)",
    )
    if needs_models:
        parser.add_argument(
            "--models_config", required=True, help="models config JSON (configs/models/*.json)"
        )
        parser.add_argument(
            "--model_key", nargs="+", default=None, help="only these model ids (default: all)"
        )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["wds/digits"],
        help="dataset names or .txt files with one name per line (default: wds/digits)",
    )
    parser.add_argument(
        "--launcher", choices=["local", "slurm"], default="local", help="where work runs"
    )
    parser.add_argument(
        "--slurm_config",
        default=None,
        help="configs/slurm/<name>.json, or just <name> (with --launcher slurm)",
    )
    parser.add_argument(
        "--no_wait",
        action="store_true",
        help="with --launcher slurm: submit and return; rerun the command to collect",
    )
    parser.add_argument("--force", action="store_true", help="recompute even up-to-date outputs")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--num_threads",
        type=int,
        default=None,
        help="torch intra-op CPU threads (default: $SLURM_CPUS_PER_TASK, else the CPUs this "
        "process may use)",
    )
    parser.add_argument(
        "--wandb",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="log to Weights & Biases (offline mode unless configured)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def parse_stage_args(
    doc: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    argv: Sequence[str] | None = None,
    *,
    needs_models: bool = True,
) -> argparse.Namespace:
    """Parse a stage's flags (the shared ones + ``add_arguments``'s), set up logging and threads.

    torch's intra-op thread count is set here for every stage (:mod:`sim_consistency.threads`:
    ``--num_threads``, else ``$SLURM_CPUS_PER_TASK``, else the process's CPU affinity).

    ``doc`` is the stage module's docstring: its first paragraph is the ``--help`` description.
    """
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser, needs_models=needs_models)
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        set_torch_threads(args.num_threads)
    except SimcError as exc:
        parser.error(str(exc))
    return args
