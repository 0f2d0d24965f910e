"""Stage: the whole study on the embedded digits data (``make demo``).

One command, no download, a 2-core CPU: builds ``wds/digits`` and its noisy copy, trains the
demo's own small real models (W0, fine-tuned and branched runs), builds every variant (uniform,
greedy and pruned soups, MonoSoup with both rank rules and its high-/low-only ablations, WiSE-FT,
TIES), extracts block-wise features, computes model×model similarity matrices and
block×block CKA against W0 (both with 95% jackknife intervals), linear probes, soup metrics
(barriers, branching, purity), Rep2Rep consistency across the two datasets, combined probes and
ensembles of model pairs and the Rep2Rep paper's analyses, aggregates the results and writes
``results/report.{md,html}``.

Every step is one stage's ``main`` with the same flags a user would type, so the demo is also
the integration test of the stages. Re-running reuses everything cached (each stage skips
outputs whose content key is current).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sim_consistency.config.shipped import shipped_config
from sim_consistency.project import ProjectLocation
from sim_consistency.runtime import (
    StageSettings,
    build_parser,
    configure_logging,
    option,
    run_main,
    settings_from_namespace,
)

__all__ = [
    "DEFAULT_MODELS_CONFIG",
    "DEMO_DATASETS",
    "DEMO_PROBE_SEEDS",
    "DemoSettings",
    "demo_steps",
    "main",
]

#: The demo's configs, shipped with the package (``configs/models/demo.json``, …).
DEFAULT_MODELS_CONFIG = shipped_config("models", "demo")
DEFAULT_SIMILARITY_CONFIG = shipped_config("similarity", "default")
DEFAULT_MODEL_SETS = shipped_config("model_sets", "demo")
#: The Rep2Rep analyses' light demo settings (seconds on the digits data).
_ANALYSES_OPTIONS = ("--category_fields", "architecture_class", "--n_draws", "50",
                     "--sample_sizes", "50", "--sample_seeds", "0", "1")  # fmt: skip
#: The in-distribution dataset and its noisy copy (OOD: σ = 2 pixel noise) the study compares.
DEMO_DATASETS: tuple[str, ...] = ("wds/digits", "wds/digits_noisy")
#: The demo's reference model: W0 of the ResNet group (BatchNorm, so every BN policy matters).
DEMO_REFERENCE = "rn_w0"
_PROFILE_METHODS = ("monosoup", "highonly", "lowonly", "uniform")
_SOUP_METHODS = ("uniform", "weighted", "greedy", "pruned")
#: The probe seeds the README recommends (``--seeds 0 1 2``): each seed draws its own validation
#: split (and, for the rep2rep protocol, initialisation), so the report shows a spread over seeds.
DEMO_PROBE_SEEDS: tuple[int, ...] = (0, 1, 2)


def demo_model_sets(location: ProjectLocation, models_config: Path) -> Path | None:
    """Write the shipped demo model sets whose models are all in ``models_config`` (a reduced
    study has fewer) to ``models/generated/demo_model_sets.json``; None when none is left."""
    import json

    ids = set(json.loads(Path(models_config).read_text()))
    sets = json.loads(DEFAULT_MODEL_SETS.read_text())["model_sets"]
    kept = {name: members for name, members in sets.items() if set(members) <= ids}
    if not kept:
        return None
    path = location.models / "generated" / "demo_model_sets.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model_sets": kept}, indent=1) + "\n")
    return path


def demo_models(models_config: Path, *, quick: bool = False) -> dict[str, list[str]]:
    """Pick the models of the layer-CKA grids, the barriers and the generated soup study.

    Layer CKA: the MonoSoup paper's profile (W0, the first fine-tuned run of its group, and every
    MonoSoup / high-only / low-only variant and uniform soup of that group), plus every soup with
    its ingredients (the soup-metrics block CKA reads their grids). Barriers: the first two
    fine-tuned runs (one basin: expect ≈ 0) and the first branched run (forked early: a
    barrier); ``quick`` keeps the first two. Ids follow the demo study's naming (``<group>_w0``,
    ``<group>_ft_*``, ``<group>_br_*``), read from the file as JSON; ``interpolation`` and
    ``branching`` are the ids ``build_variants --generate`` adds for them.
    """
    import json

    from sim_consistency.merging.generate import (
        barrier_pairs,
        branching_runs,
        branching_soup_entries,
        interpolation_alphas,
        interpolation_id,
    )

    raw = json.loads(Path(models_config).read_text())
    group = DEMO_REFERENCE.split("_")[0]
    finetuned = [m for m in raw if m.startswith(f"{group}_ft_")]
    branched = [m for m in raw if m.startswith(f"{group}_br_")]
    methods = {m: (entry.get("variant") or {}).get("method") for m, entry in raw.items()}
    profile = [m for m in raw if m.startswith(f"{group}_") and methods[m] in _PROFILE_METHODS]
    soups = [m for m in raw if methods[m] in _SOUP_METHODS]
    ingredients = [i for m in soups for i in raw[m]["variant"]["ingredients"]]
    barriers = [*finetuned[:2], *branched[:1]][: 2 if quick else 3]
    alphas = interpolation_alphas(5 if quick else 11)
    return {
        "layer_cka": list(
            dict.fromkeys([DEMO_REFERENCE, *finetuned[:1], *profile, *soups, *ingredients])
        ),
        "barriers": barriers,
        "interpolation": [
            interpolation_id(a, b, x) for a, b in barrier_pairs((), barriers) for x in alphas
        ],
        "branching": list(branching_soup_entries(branching_runs(raw), None)),
    }


def demo_steps(
    location: ProjectLocation,
    models_config: Path,
    *,
    quick: bool = False,
    study: Path | None = None,
) -> list[tuple[str, Callable[[list[str]], int], list[str]]]:
    """Return the demo's steps as ``(title, stage main, argv)``, in order."""
    from sim_consistency.stages import (
        analyses,
        build_variants,
        combined_probe,
        consistency,
        distance_matrix_computation,
        feature_extraction,
        layer_cka,
        single_model_evaluation,
        soup_metrics,
        train_demo_models,
    )

    root = ["--project_root", str(location.root)]
    models = [*root, "--models_config", str(models_config)]
    # The demo's config plus the soup study's generated variants (interpolation points,
    # branching soups): the stages that analyse those read this one.
    generated = location.models / "generated" / "demo_soup_study.json"
    study_models = [*root, "--models_config", str(generated)]
    datasets = ["--datasets", *DEMO_DATASETS]
    similarity = ["--similarity_config", str(DEFAULT_SIMILARITY_CONFIG)]
    seeds = ["--seeds", *map(str, DEMO_PROBE_SEEDS)]
    picked = demo_models(models_config, quick=quick)
    barriers = ["--barrier_models", *picked["barriers"], "--n_alphas", "5" if quick else "11"]
    steps: list[tuple[str, Callable[[list[str]], int], list[str]]] = [
        (
            "train the demo models",
            train_demo_models.main,
            [*root, *(["--study", str(study)] if study else [])],
        ),
        (
            "build every variant (+ the soup study's interpolation points and branching soups)",
            build_variants.main,
            [*models, "--generate", str(generated), *barriers],
        ),
        ("extract block-wise features", feature_extraction.main, [*models, *datasets]),
        (
            "extract the interpolation points (test split)",
            feature_extraction.main,
            [*study_models, *datasets, "--splits", "test", "--model_key", *picked["interpolation"]],
        ),
        (
            "model×model similarity matrices with 95% jackknife intervals",
            distance_matrix_computation.main,
            [*models, *datasets, *similarity, "--ci"],
        ),
        (
            "block×block CKA grids with 95% jackknife intervals (W0 profile, soups, ingredients)",
            layer_cka.main,
            [
                *models,
                *datasets,
                "--model_key",
                *picked["layer_cka"],
                "--reference",
                DEMO_REFERENCE,
                "--pairs",
                "all",
                "--ci",
            ],
        ),
        (
            "linear probes",
            single_model_evaluation.main,
            [*models, *datasets, "--blocks", "last", *seeds],
        ),
    ]
    if picked["branching"]:
        steps[4:4] = [
            (
                "extract the branching soups",
                feature_extraction.main,
                [*study_models, *datasets, "--model_key", *picked["branching"]],
            )
        ]
        steps.append(
            (
                "linear probes of the branching soups",
                single_model_evaluation.main,
                [*study_models, *datasets, "--blocks", "last", *seeds, "--model_key",
                 *picked["branching"]],
            )
        )  # fmt: skip
    steps += [
        (
            "soup metrics",
            soup_metrics.main,
            [
                *study_models,
                *datasets,
                "--ood_datasets",
                DEMO_DATASETS[1],
                "--base",
                DEMO_REFERENCE,
                *barriers,
            ],
        ),
        ("Rep2Rep consistency", consistency.main, [*models, *datasets, *similarity]),
        (
            "the Rep2Rep paper's analyses (categories, clustering, sample size, random sets)",
            analyses.main,
            [*models, *datasets, *similarity, *_ANALYSES_OPTIONS],
        ),
    ]
    model_sets = demo_model_sets(location, models_config)
    if model_sets is not None:  # before the analyses: their combined_gap reads its table
        steps[-1:-1] = [
            (
                "combined probes and ensembles of model pairs",
                combined_probe.main,
                [*models, *datasets, "--model_sets", str(model_sets),
                 "--combiners", "concat", "concat_pca", "ensemble", "--seeds", "0"],
            )
        ]  # fmt: skip
    return steps


@dataclass(frozen=True, kw_only=True)
class DemoSettings(StageSettings):
    """The demo's flags (it runs the stages in order; it is not a planned stage itself)."""

    models_config: Path = option(
        "models config",
        default=DEFAULT_MODELS_CONFIG,
        shown_default="the shipped configs/models/demo.json",
    )
    quick: bool = option("one barrier pair on a 5-point grid (tests)", default=False)
    study: Path | None = option(
        "training study JSON", default=None, shown_default="the built-in demo study"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``scripts/demo.py`` (``make demo``)."""
    parser = build_parser(
        DemoSettings,
        description=__doc__.split("\n\n")[0].removeprefix("Stage: "),
        examples=("python scripts/demo.py", "python scripts/demo.py --project_root /tmp/demo"),
    )
    args = settings_from_namespace(DemoSettings, parser.parse_args(argv))
    configure_logging(args.verbose)

    def body() -> int:
        from sim_consistency.aggregate import write_aggregates
        from sim_consistency.report import write_report

        start = time.perf_counter()
        location = ProjectLocation.resolve(args.project_root).create()
        steps = demo_steps(
            location,
            Path(args.models_config).resolve(),
            quick=args.quick,
            study=Path(args.study).resolve() if args.study else None,
        )
        total = len(steps) + 1
        for i, (title, stage_main, stage_argv) in enumerate(steps, start=1):
            step_start = time.perf_counter()
            print(f"[{i}/{total}] {title}", flush=True)
            code = stage_main(stage_argv)
            if code:
                print(f"demo stopped: step '{title}' failed (exit {code})")
                return code
            print(f"      done in {time.perf_counter() - step_start:.1f} s", flush=True)
        print(f"[{total}/{total}] aggregate tables and the report", flush=True)
        write_aggregates(location)
        md, page = write_report(location)
        print(f"demo finished in {time.perf_counter() - start:.1f} s; report: {page} ({md.name})")
        return 0

    return run_main(body)
