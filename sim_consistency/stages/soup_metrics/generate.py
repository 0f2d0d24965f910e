"""The ``generate`` step of ``build_variants``: flags and the generated models config.

``build_variants --generate OUT --interpolate A:B --barrier_models … --n_alphas N
[--bn_policy …]`` writes the models config plus the soup study's generated variants
(:mod:`sim_consistency.merging.generate`: interpolation points, branching soups) to ``OUT``;
``build_variants`` then builds ``OUT``'s variants and the later stages take ``--models_config
OUT``. The same ``--interpolate`` / ``--barrier_models`` / ``--n_alphas`` name the barriers
``soup_metrics`` reads.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sim_consistency.config import load_models_config
from sim_consistency.merging.generate import SoupStudy, generated_entries, write_generated_config
from sim_consistency.project import ProjectLocation

__all__ = [
    "add_generate_arguments",
    "add_pair_arguments",
    "generate_config",
    "generate_step",
    "model_pair",
]

log = logging.getLogger("sim_consistency.build_variants")


def model_pair(text: str) -> tuple[str, str]:
    """argparse type of ``MODEL_A:MODEL_B``."""
    a, sep, b = text.partition(":")
    if not sep or not a or not b:
        raise argparse.ArgumentTypeError(f"expected MODEL_A:MODEL_B (got {text!r})")
    return a, b


def add_pair_arguments(parser: argparse.ArgumentParser) -> None:
    """The interpolation paths of a soup study (shared by build_variants and soup_metrics)."""
    parser.add_argument(
        "--interpolate", nargs="+", type=model_pair, default=[], help="A:B interpolation paths"
    )
    parser.add_argument(
        "--barrier_models", nargs="+", default=[], help="models whose every pair is interpolated"
    )
    parser.add_argument("--n_alphas", type=int, default=11, help="interpolation grid size")


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the generate step's flags to build_variants."""
    parser.add_argument(
        "--generate",
        default=None,
        metavar="OUT_JSON",
        help="write the models config plus generated soup-study variants (interpolation points "
        "of --interpolate/--barrier_models, one uniform soup per group of branched runs) to "
        "OUT_JSON and build its variants; pass OUT_JSON to the later stages",
    )
    add_pair_arguments(parser)
    parser.add_argument(
        "--bn_policy",
        choices=["reset", "average", "from_anchor"],
        default=None,
        help="BatchNorm policy of the generated variants (default: the method's)",
    )


def generate_config(
    models_config: Path, out: Path, study: SoupStudy, *, project_root: str | Path | None = None
) -> Path:
    """Write ``models_config`` plus ``study``'s generated variants to ``out``; return its path.

    The whole generate step, independent of argparse (a settings-driven stage calls this).
    """
    location = ProjectLocation.resolve(project_root)
    specs = load_models_config(models_config, base_dir=location.root)
    entries = generated_entries(specs, study)
    written = write_generated_config(Path(models_config), entries, Path(out))
    log.info("%s: models config + %d generated variant(s)", written, len(entries))
    return written.resolve()


def generate_step(args: argparse.Namespace) -> Path | None:
    """Run the generate step of parsed flags (``--generate``); None when it was not asked for."""
    if not args.generate:
        return None
    study = SoupStudy(
        interpolate=tuple(args.interpolate),
        barrier_models=tuple(args.barrier_models),
        n_alphas=args.n_alphas,
        bn_policy=args.bn_policy,
    )
    return generate_config(
        Path(args.models_config), Path(args.generate), study, project_root=args.project_root
    )
