"""The demo pipeline end to end on a small study, its report, and every aggregation notebook.

One session-scoped run of ``scripts/demo.py``'s stage on the quick study of
``tests/demo_study.py`` (fixture ``demo_root``), so the whole chain — training, variants,
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

from sim_consistency.similarity.grid_outputs import pair_name
from sim_consistency.stages import demo

pytest.importorskip("nbconvert", reason="nbconvert (dev dependency) not installed")
nbformat = pytest.importorskip("nbformat", reason="nbformat (dev dependency) not installed")

# The demo fixture runs the whole pipeline (~2 min idle; past 10 min on a loaded 2-core machine):
# its own time limit, well above the suite's 600 s per test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_demo_writes_every_stage_and_the_report(demo_root):
    location, _ = demo_root
    assert (location.model_similarities / "wds_digits_noisy").is_dir()
    assert any(location.layer_cka.glob("*/diagonal_profile.png"))
    assert any((location.linear_probe / "single_model").glob("*/*/*/results.json"))
    assert (location.soup_metrics / "soup_vs_ingredients.csv").is_file()
    assert (location.soup_metrics / "branching_summary.json").is_file()
    assert any(location.consistency.glob("*/*/consistency_pearson.csv"))
    # the demo's matrices carry intervals (--ci): every metric but mutual k-NN has one per pair
    sims = pd.read_csv(location.aggregated / "similarities.csv")
    knn = sims["metric"].str.startswith("mknn")
    assert sims.loc[~knn, ["se", "ci_low", "ci_high"]].notna().all().all()
    assert (sims.loc[~knn, "ci_low"] <= sims.loc[~knn, "ci_high"]).all()
    assert sims.loc[knn, "ci_low"].isna().all()
    profile = pd.read_csv(next(location.layer_cka.glob("*/diagonal_profile.csv")))
    assert profile[["ci_low", "ci_high"]].notna().all().all()  # layer CKA ran with --ci too
    pairs = pd.read_csv(location.linear_probe / "combined" / "combined_vs_single.csv")
    assert {"concat", "concat_pca", "ensemble"} <= set(pairs["combiner"])
    gap = location.results / "analyses" / "combined_gap"
    assert any(gap.glob("*/gap_vs_similarity.csv"))  # the analyses read the pair table
    report = (location.results / "report.md").read_text()
    for title in (
        "Summary",
        "Models and soups: accuracy",
        "MonoSoup and its ablations",
        "Block-wise CKA",
        "Representational similarity and Rep2Rep consistency",
        "Linear probes",
        "Combined probes, ensembles and probe transfer",
        "Rep2Rep analyses",
        "Interpolation barriers",
        "Branching and basins",
        "Feature purity",
    ):
        assert f"## {title}" in report, title
    assert "Not run yet" not in report
    assert report.index("## Summary") < report.index("## Models and soups: accuracy")
    html = (location.results / "report.html").read_text()
    assert html.count("<img") >= 5 and "data:image/png;base64," in html
    # the accuracy table holds every variant method, MonoSoup's section its ablations
    accuracy = pd.read_csv(location.soup_metrics / "accuracy.csv")
    assert {"monosoup", "highonly", "lowonly", "ties", "uniform"} <= set(accuracy["method"])
    mono = pd.read_csv(location.aggregated / "report" / "MonoSoup_and_its_ablations.csv")
    assert mono["role"].tolist() == ["base (W0)", "fine-tuned", "monosoup", "highonly", "lowonly"]
    # probes ran with the README's seeds, so every summary row has a spread
    summary = pd.read_csv(location.aggregated / "probe_summary.csv")
    assert (summary["n_seeds"] == len(demo.DEMO_PROBE_SEEDS)).all()
    assert summary["top1_std"].notna().all()
    # both barrier definitions, named
    barriers = pd.read_csv(location.soup_metrics / "barriers.csv")
    assert {"barrier", "barrier_midpoint"} <= set(barriers.columns)
    assert "Entezari et al. 2022" in report and "Frankle et al. 2020" in report


def test_figures_keep_every_id_and_outputs_record_threads(demo_root):
    location, _ = demo_root
    folder = location.layer_cka / "wds_digits"
    meta = json.loads((folder / "metadata.json").read_text())
    for a, b in meta["pairs"]:
        assert (folder / "heatmaps" / f"{pair_name(a, b)}.png").is_file(), (a, b)
    assert len(list((folder / "heatmaps").glob("*.png"))) == len(meta["pairs"])
    assert meta["torch_num_threads"] >= 1 and meta["num_threads_source"] in {
        "--num_threads",
        "SLURM_CPUS_PER_TASK",
        "cpu_affinity",
    }
    summary = json.loads((location.soup_metrics / "summary.json").read_text())
    assert summary["torch_num_threads"] >= 1


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
