"""analyses end to end on real caches and matrices of two datasets (tiny real models)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim_consistency.analysis import analysis_dir
from sim_consistency.project import dataset_slug
from sim_consistency.similarity import consistency, consistency_summary, model_set_pairs
from sim_consistency.similarity.matrix_files import read_similarity_matrix
from sim_consistency.stages import analyses as stage
from sim_consistency.stages import distance_matrix_computation

from .conftest import N_ROWS, STAGE_MODELS

pytestmark = pytest.mark.slow  # extraction + matrices

METRICS = [
    {"sim_method": "cka", "sim_kernel": "linear", "unbiased": True},
    {"sim_method": "mknn", "k": 5},
]
CKA, MKNN = "cka_kernel_linear_unbiased", "mknn_k_5"
OPTIONS = ["--sample_sizes", "8", "16", "--sample_seeds", "0", "1", "--n_draws", "12"]


def _args(proj, config, *extra, datasets=None):
    return [
        "--project_root", str(proj.location.root), "--models_config", str(proj.models_config),
        "--datasets", *(datasets or proj.datasets), "--similarity_config", str(config), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("analyses_config") / "metrics.json"
    path.write_text(json.dumps(METRICS))
    return path


@pytest.fixture(scope="module")
def combined_table(tmp_path_factory) -> Path:
    """A combined-probe table in the documented layout: gap = 0.2 · (1 − pair index / 6)."""
    ids = list(STAGE_MODELS)
    rows = [
        {"dataset": "wds/digits", "model_a": a, "model_b": b, "combined_top1": 0.8 + 0.01 * k,
         "top1_a": 0.7, "top1_b": 0.75}
        for k, (a, b) in enumerate((a, b) for i, a in enumerate(ids) for b in ids[i + 1 :])
    ]  # fmt: skip
    path = tmp_path_factory.mktemp("combined") / "combined_vs_single.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def computed(similarity_project, config, combined_table, tmp_path_factory):
    proj = similarity_project.copy(tmp_path_factory.mktemp("analyses") / "root")
    assert distance_matrix_computation.main(_args(proj, config)) == 0
    argv = _args(proj, config, *OPTIONS, "--combined_probes", str(combined_table))
    assert stage.main(argv) == 0
    return proj


def _matrices(proj, slug):
    return {d: read_similarity_matrix(proj.location.similarity_dir(d, slug)) for d in proj.datasets}


def test_every_analysis_writes_tables_figures_and_metadata(computed):
    loc = computed.location
    for analysis, files in stage.OUTPUT_FILES.items():
        for slug in (CKA, MKNN):
            folder = analysis_dir(loc, analysis) / slug
            if analysis == "sample_size":
                if slug == MKNN:
                    assert not folder.exists()  # CKA only
                    continue
                folder = folder / dataset_slug(computed.datasets[0])
            assert all((folder / f).is_file() for f in (*files, "metadata.json")), folder
            assert list(folder.glob("*.png")) and list(folder.glob("*.pdf")), folder
            assert json.loads((folder / "metadata.json").read_text())["analysis"] == analysis


def test_category_consistency_equals_the_restricted_consistency(computed):
    folder = analysis_dir(computed.location, "categories") / CKA
    table = pd.read_csv(folder / "category_consistency.csv")
    matrices = _matrices(computed, CKA)
    metadata = {m: {k: v for k, v in e.items() if k == "objective"} for m, e in
                STAGE_MODELS.items()}  # fmt: skip
    pairs = model_set_pairs(metadata, {"objective": "supervised"}, {"objective": "supervised"})
    expected = consistency(matrices, model_pairs=pairs).iloc[0, 1]
    row = table[(table["field"] == "objective") & (table["category"] == "supervised")]
    assert row["consistency"].iloc[0] == pytest.approx(expected, abs=1e-12)
    # one-model categories (clip, cnn) are left out: fewer than 3 pairs
    assert set(table["category"]) == {"supervised", "transformer"}
    anchors = pd.read_csv(folder / "anchor_consistency.csv")
    assert sorted(anchors["anchor"]) == sorted(STAGE_MODELS)


def test_sample_size_curve_ends_at_the_stored_matrix(computed):
    folder = (
        analysis_dir(computed.location, "sample_size") / CKA / dataset_slug(computed.datasets[0])
    )
    curves = pd.read_csv(folder / "curves.csv")
    assert sorted(curves["n"].unique()) == [8, 16, N_ROWS]
    stored = _matrices(computed, CKA)[computed.datasets[0]]
    full = curves[curves["n"] == N_ROWS]
    for row in full.itertuples():
        assert row.similarity == pytest.approx(stored.loc[row.model_a, row.model_b], abs=1e-10)
    assert (full["abs_error"] == 0).all()


def test_random_sets_and_clusters_and_gap(computed):
    loc = computed.location
    draws = pd.read_csv(analysis_dir(loc, "random_sets") / CKA / "draws.csv")
    full = consistency_summary(consistency(_matrices(computed, CKA)))["mean"]
    assert draws.loc[draws["draw"] == -1, "mean"].iloc[0] == pytest.approx(full, abs=1e-12)
    assert set(draws.loc[draws["draw"] >= 0, "k"]) == {3}  # default: half of 4 models, >= 3
    clusters = pd.read_csv(analysis_dir(loc, "clustering") / CKA / "model_clusters.csv")
    assert len(clusters) == 2 * len(STAGE_MODELS) and set(clusters["cluster"]) <= {1, 2}
    gap = pd.read_csv(analysis_dir(loc, "combined_gap") / CKA / "gap_vs_similarity.csv")
    stored = _matrices(computed, CKA)["wds/digits"]
    np.testing.assert_allclose(gap["gap"], gap["combined_top1"] - 0.75)
    np.testing.assert_allclose(gap["similarity"], [stored.loc[a, b] for a, b in
                                                   zip(gap["model_a"], gap["model_b"], strict=True)])  # fmt: skip


def test_rerun_reuses_and_missing_combined_table_is_skipped_with_the_command(
    computed, config, capsys, caplog
):
    argv = _args(computed, config, *OPTIONS, "--analyses", "categories", "combined_gap")
    with caplog.at_level(logging.WARNING, logger="sim_consistency.analyses"):
        assert stage.main(argv) == 0
    assert "scripts/combined_probe.py" in caplog.text + capsys.readouterr().err
    assert stage.main(argv) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_errors_are_one_line_exit_2(computed, config, capsys):
    assert stage.main(_args(computed, config, datasets=["wds/digits"])) == 2
    assert "compare datasets; give at least 2" in capsys.readouterr().err
    argv = _args(computed, config, datasets=[computed.datasets[0], "wds/other"])
    assert stage.main(argv) == 2
    err = capsys.readouterr().err
    assert "no complete similarity matrix" in err and "distance_matrix_computation" in err
    assert stage.main(_args(computed, config, "--anchors", "nope")) == 2
    assert "--anchors: ['nope']" in capsys.readouterr().err
    argv = _args(computed, config, "--analyses", "sample_size", "--sample_sizes", "2")
    assert stage.main(argv) == 2
    assert "--sample_sizes [2]" in capsys.readouterr().err
    assert stage.main(_args(computed, config, "--set_sizes", "5")) == 2
    assert "--set_sizes [5]: each k must be in 3..4" in capsys.readouterr().err
    assert stage.main(_args(computed, config, "--analyses", "categories",
                            "--category_fields", "size_class")) == 2  # fmt: skip
    assert "no model of the config has any of the metadata" in capsys.readouterr().err
    # validated before any work: the current outputs are kept
    assert (analysis_dir(computed.location, "categories") / CKA / "metadata.json").is_file()


def test_report_shows_the_analyses(computed):
    from sim_consistency.report import write_report

    md, page = write_report(computed.location)
    text = md.read_text()
    assert "## Rep2Rep analyses" in text
    assert "highest mean within-category consistency objective=supervised" in text
    assert "Pearson r(similarity, combined-probe gap)" in text
    assert "mean |CKA(n) − CKA(all rows)|" in text and "random sets span" in text
    assert "analyses/clustering/cka_kernel_linear_unbiased/dendrogram_wds_digits.png" in text
    assert "Rep2Rep analyses (scripts/analyses.py)" not in text  # not listed as missing
    assert "data:image/png;base64" in page.read_text()


def test_dataset_categories_average_the_consistency_table(computed, config, tmp_path):
    categories = tmp_path / "dataset_info.json"
    categories.write_text(json.dumps({d: {"domain": "digits"} for d in computed.datasets}))
    argv = _args(computed, config, "--analyses", "categories", "--dataset_categories",
                 str(categories))  # fmt: skip
    assert stage.main(argv) == 0
    folder = analysis_dir(computed.location, "categories") / CKA
    table = pd.read_csv(folder / "dataset_category_consistency.csv")
    expected = consistency(_matrices(computed, CKA)).iloc[0, 1]
    assert table.loc[0, "category_a"] == table.loc[0, "category_b"] == "digits"
    assert table.loc[0, "mean"] == pytest.approx(expected, abs=1e-12)
