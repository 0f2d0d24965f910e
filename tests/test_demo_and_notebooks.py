"""The demo pipeline end to end on a small study, its report, and every aggregation notebook.

One module-scoped run of ``scripts/demo.py``'s stage with a reduced training study (one ResNet
group, 2+1 epochs) and a handful of variants, so the whole chain — training, variants,
extraction on two datasets, similarity, layer CKA, probes, soup metrics, consistency,
aggregation, report — runs in CI; then each notebook is executed headless against its results.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from sim_consistency.project import ProjectLocation
from sim_consistency.stages import demo, train_demo_models

pytest.importorskip("nbconvert", reason="nbconvert (dev dependency) not installed")
nbformat = pytest.importorskip("nbformat", reason="nbformat (dev dependency) not installed")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
QUICK_STUDY = {
    "groups": {"rn": {"model_name": "test_resnet", "img_size": 16}},
    "pretrain_epochs": 2,
    "pretrain_fraction": 0.3,
    "branch_epochs": [1],
    "finetune_epochs": 1,
    "finetune_fraction": 0.3,
    "finetune_lrs": [0.001],
    "seeds": [0, 1],
}


def _variants() -> dict:
    ft = ["rn_ft_lr0.001_s0", "rn_ft_lr0.001_s1"]
    entries = {
        "rn_soup_uniform": {"variant": {"method": "uniform", "ingredients": ft}},
        "rn_ties": {"variant": {"method": "ties", "base": "rn_w0", "finetuned": ft}},
    }
    for method in ("monosoup", "highonly", "lowonly"):
        entries[f"rn_{method}_vetterli"] = {
            "variant": {"method": method, "base": "rn_w0", "finetuned": ft[0]}
        }
    return entries


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory, digits_root):
    tmp = tmp_path_factory.mktemp("demo")
    location = ProjectLocation.resolve(tmp / "root").create()
    os.symlink(digits_root.wds_dataset_dir("digits"), location.wds_dataset_dir("digits"))
    study = tmp / "study.json"
    study.write_text(json.dumps(QUICK_STUDY))
    config = tmp / "models.json"
    root = ["--project_root", str(location.root)]
    assert (
        train_demo_models.main(
            [*root, "--study", str(study), "--write_models_config", str(config), "--no-progress"]
        )
        == 0
    )
    config.write_text(json.dumps({**json.loads(config.read_text()), **_variants()}))
    argv = [*root, "--models_config", str(config), "--study", str(study), "--quick"]
    assert demo.main(argv) == 0
    return location, argv


def test_demo_writes_every_stage_and_the_report(demo_root):
    location, _ = demo_root
    assert (location.model_similarities / "wds_digits_noisy").is_dir()
    assert any(location.layer_cka.glob("*/diagonal_profile.png"))
    assert any((location.linear_probe / "single_model").glob("*/*/*/results.json"))
    assert (location.soup_metrics / "soup_vs_ingredients.csv").is_file()
    assert (location.soup_metrics / "branching_summary.json").is_file()
    assert any(location.consistency.glob("*/*/consistency_pearson.csv"))
    report = (location.results / "report.md").read_text()
    for title in (
        "Models and soups: accuracy",
        "Block-wise CKA",
        "Representational similarity and Rep2Rep consistency",
        "Linear probes",
        "Interpolation barriers",
        "Branching and basins",
        "Feature purity",
    ):
        assert f"## {title}" in report, title
    assert "Not run yet" not in report
    html = (location.results / "report.html").read_text()
    assert html.count("<img") >= 5 and "data:image/png;base64," in html


def test_rerun_reuses_everything(demo_root):
    location, argv = demo_root
    watched = [
        *location.features.rglob("*.h5"),
        *location.model_similarities.rglob("metadata.json"),
        *(location.linear_probe / "single_model").rglob("results.json"),
        *location.models.glob("*.safetensors"),
    ]
    before = {p: p.stat().st_mtime_ns for p in watched}
    assert demo.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in watched} == before


NOTEBOOK_OUTPUTS = [
    ("aggregate_similarities", ["similarities.csv"]),
    ("aggregate_probes", ["probes.csv", "probe_summary.csv"]),
    ("aggregate_soups", ["soups_soup_vs_ingredients.csv"]),
    ("aggregate_consistency", ["consistency.csv", "similarity_vs_performance.csv"]),
]


def _html_tables(notebook) -> list[str]:
    return [
        out["data"]["text/html"]
        for cell in notebook.cells
        for out in cell.get("outputs", [])
        if "text/html" in out.get("data", {}) and "<table" in out["data"]["text/html"]
    ]


@pytest.mark.parametrize("name, outputs", NOTEBOOK_OUTPUTS)
def test_notebook_runs_headless_with_figures_and_tables(demo_root, name, outputs, tmp_path):
    """Executed as a user would (jupyter nbconvert, started in notebooks/), outputs checked."""
    import subprocess
    import sys

    location, _ = demo_root
    for out in outputs:
        (location.aggregated / out).unlink(missing_ok=True)
    start = time.time()
    executed = tmp_path / f"{name}.ipynb"
    subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
         "--ExecutePreprocessor.timeout=300", "--output", str(executed),
         str(NOTEBOOKS / f"{name}.ipynb")],
        cwd=NOTEBOOKS,
        env={**os.environ, "SIMC_ROOT": str(location.root)},
        check=True,
        capture_output=True,
    )  # fmt: skip
    notebook = nbformat.read(executed, as_version=4)
    outputs_of = [o for c in notebook.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs_of if o.get("output_type") == "error"]
    assert any(f"project root: {location.root}" in o.get("text", "") for o in outputs_of)
    images = [o for o in outputs_of if "image/png" in o.get("data", {})]
    assert images, f"{name}: no inline figure"
    tables = _html_tables(notebook)
    assert tables and all("<tbody>\n    <tr>" in t for t in tables), f"{name}: empty table"
    for out in outputs:
        table = pd.read_csv(location.aggregated / out)
        assert len(table) > 0 and (location.aggregated / out).stat().st_mtime >= start
    assert any(p.stat().st_mtime >= start for p in location.plots.glob("*.png"))


@pytest.mark.parametrize("name", [n for n, _ in NOTEBOOK_OUTPUTS])
def test_paired_script_prints_its_tables_and_figures(demo_root, name):
    import subprocess
    import sys

    location, _ = demo_root
    out = subprocess.run(
        [sys.executable, str(NOTEBOOKS / f"{name}.py")],
        cwd=NOTEBOOKS,
        env={**os.environ, "SIMC_ROOT": str(location.root)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert f"project root: {location.root}" in out
    assert "\n== " in out  # a titled table
    assert "figure: " in out and ".png" in out


@pytest.mark.parametrize(
    "name",
    ["aggregate_similarities", "aggregate_probes", "aggregate_soups", "aggregate_consistency"],
)
def test_notebooks_are_paired_with_their_percent_scripts(name):
    jupytext = pytest.importorskip("jupytext")
    from_py = jupytext.read(NOTEBOOKS / f"{name}.py")
    committed = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert [c.source for c in from_py.cells] == [c.source for c in committed.cells]
    assert all(not c.get("outputs") for c in committed.cells if c.cell_type == "code")
