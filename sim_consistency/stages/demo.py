"""Stage: the demo pipeline on the embedded ``wds/digits`` data (``make demo``).

Runs every stage that exists so far, end to end, on data built locally and models that need
no download: project folders -> digits webdataset -> model factory (blocks of every demo
model) -> block-wise feature extraction. It grows as stages land.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from sim_consistency.config import load_models_config
from sim_consistency.data import build_digits, load_dataset
from sim_consistency.project import ProjectLocation
from sim_consistency.stages import feature_extraction
from sim_consistency.stages.cli import configure_logging, run_main

__all__ = ["main", "DEFAULT_MODELS_CONFIG"]

DEFAULT_MODELS_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "models" / "demo.json"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--project_root",
        default=None,
        help="project root (default: $SIMC_ROOT, else ./project_root)",
    )
    parser.add_argument("--models_config", default=str(DEFAULT_MODELS_CONFIG))
    parser.add_argument(
        "--max_samples",
        type=int,
        default=None,
        help="class-stratified subset per split (default: all rows)",
    )
    args = parser.parse_args(argv)
    configure_logging()

    def body() -> int:
        start = time.perf_counter()
        location = ProjectLocation.resolve(args.project_root).create()
        print(f"[1/3] project root: {location.root}")
        wds_dir = build_digits(location)
        for split in ("train", "val", "test"):
            print("      " + load_dataset("wds/digits", split, location=location).describe())
        print(f"      shards in {wds_dir}")
        print("[2/3] models and their blocks")
        specs = load_models_config(args.models_config, base_dir=location.root)
        extraction_args = [
            "--project_root",
            str(location.root),
            "--models_config",
            str(args.models_config),
            "--datasets",
            "wds/digits",
            "--splits",
            "train",
            "test",
        ]
        if args.max_samples:
            extraction_args += ["--max_samples", str(args.max_samples)]
        code = feature_extraction.main([*extraction_args, "--list_blocks"])
        if code:
            return code
        print(f"[3/3] feature extraction of {len(specs)} models")
        code = feature_extraction.main(extraction_args)
        if code:
            return code
        print(
            f"demo finished in {time.perf_counter() - start:.1f} s; results under {location.root}"
        )
        return 0

    return run_main(body)
