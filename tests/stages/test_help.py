"""Every stage's ``--help`` answers at once: no torch/timm/h5py/open_clip/pandas on that path,
defaults and examples shown, only the flags the stage uses."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "timm", "h5py", "open_clip", "pandas", "matplotlib", "wandb", "submitit")
STAGES = (
    "feature_extraction",
    "single_model_evaluation",
    "distance_matrix_computation",
    "layer_cka",
    "consistency",
    "analyses",
    "build_variants",
    "train_demo_models",
    "import_rep2rep",
    "export_rep2rep",
    "demo",
    "soup_metrics",
    "combined_probe",
    "probe_transfer",
)

_PROBE = """
import contextlib, io, json, sys
from sim_consistency.stages import {stage} as stage
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        stage.main({argv!r})
    except SystemExit as exc:
        code = exc.code
print(json.dumps({{"code": code, "help": out.getvalue(),
                   "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def _help(stage: str, argv: list[str]) -> dict:
    script = _PROBE.format(stage=stage, argv=argv, heavy=HEAVY)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["seconds"] = time.perf_counter() - start
    return result


@pytest.mark.parametrize("stage", STAGES)
def test_help_imports_no_heavy_library_and_shows_defaults(stage):
    argv = ["features", "--help"] if stage == "import_rep2rep" else ["--help"]
    result = _help(stage, argv)
    assert result["code"] == 0
    assert result["heavy"] == [], f"{stage} --help imported {result['heavy']}"
    text = result["help"]
    assert "Examples:" in text
    assert "(default:" in text
    assert "--project_root" in text


def test_only_the_flags_a_stage_uses():
    consistency = _help("consistency", ["--help"])["help"]
    assert "--device" not in consistency and "--similarity_config" in consistency
    assert "--device" not in _help("layer_cka", ["--help"])["help"]
    extraction = _help("feature_extraction", ["--help"])["help"]
    for flag in ("--device", "--num_workers", "--list_blocks", "--job_per", "--slurm_config"):
        assert flag in extraction
    imports = _help("import_rep2rep", ["similarities", "--help"])["help"]
    assert "--launcher" not in imports and "--model_ids" in imports


def test_the_probe_protocols_match_the_probe_package():
    from sim_consistency.probe.linear_probe import PROTOCOLS
    from sim_consistency.stages.single_model_evaluation import PROTOCOLS as STAGE_PROTOCOLS

    assert STAGE_PROTOCOLS == PROTOCOLS
