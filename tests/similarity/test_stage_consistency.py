"""consistency end to end: matrices of two real datasets -> D×D Pearson/Spearman tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sim_consistency.project import dataset_slug
from sim_consistency.similarity.matrix_files import read_similarity_matrix
from sim_consistency.stages import consistency as stage
from sim_consistency.stages import distance_matrix_computation

pytestmark = pytest.mark.slow  # extraction + matrices for every test


REPO = Path(__file__).resolve().parents[2]
METRICS = [
    {"sim_method": "cka", "sim_kernel": "linear", "unbiased": True},
    {"sim_method": "mknn", "k": 5},
]
SLUGS = ["cka_kernel_linear_unbiased", "mknn_k_5"]


def _args(proj, config, *extra, datasets=None):
    return [
        "--project_root",
        str(proj.location.root),
        "--models_config",
        str(proj.models_config),
        "--datasets",
        *(datasets or proj.datasets),
        "--similarity_config",
        str(config),
        *extra,
    ]


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("consistency_config") / "metrics.json"
    path.write_text(json.dumps(METRICS))
    return path


@pytest.fixture(scope="module")
def computed(similarity_project, config, tmp_path_factory):
    """A private project with both datasets' matrices and the all-pairs tables computed."""
    proj = similarity_project.copy(tmp_path_factory.mktemp("consistency") / "root")
    assert distance_matrix_computation.main(_args(proj, config)) == 0
    assert stage.main(_args(proj, config)) == 0
    return proj


def _upper(frame: pd.DataFrame, pairs=None) -> np.ndarray:
    ids = sorted(frame.index)
    if pairs is None:
        pairs = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]
    return np.array([frame.loc[a, b] for a, b in pairs])


def _matrices(proj, slug):
    return [read_similarity_matrix(proj.location.similarity_dir(d, slug)) for d in proj.datasets]


@pytest.mark.parametrize("slug", SLUGS)
def test_tables_equal_scipy_on_the_upper_triangles(computed, slug):
    folder = computed.location.consistency / slug / "all_pairs"
    a, b = _matrices(computed, slug)
    for method, fn in (("pearson", stats.pearsonr), ("spearman", stats.spearmanr)):
        table = pd.read_csv(folder / f"consistency_{method}.csv", index_col="dataset")
        assert list(table.index) == list(computed.datasets) == list(table.columns)
        np.testing.assert_allclose(np.diag(table.to_numpy()), 1.0)
        expected = fn(_upper(a), _upper(b))[0]
        assert table.iloc[0, 1] == pytest.approx(expected, abs=1e-12)
        assert table.iloc[1, 0] == table.iloc[0, 1]
        assert (folder / f"heatmap_{method}.png").read_bytes()[:4] == b"\x89PNG"
        assert (folder / f"heatmap_{method}.pdf").read_bytes()[:4] == b"%PDF"
    summary = pd.read_csv(folder / "summary.csv")
    assert list(summary.method) == ["pearson", "spearman"]
    assert (summary.n_pairs == 1).all()
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["model_pairs"] is None and meta["restriction"] == "all_pairs"
    assert set(meta["input_content_keys"]) == set(computed.datasets)


def test_model_set_pair_restriction_by_metadata(computed, config):
    argv = _args(
        computed,
        config,
        "--set_a",
        "architecture_class=transformer",
        "--set_b",
        "architecture_class=cnn",
    )
    assert stage.main(argv) == 0
    folder = (
        computed.location.consistency
        / SLUGS[0]
        / "architecture_class=transformer__vs__architecture_class=cnn"
    )
    meta = json.loads((folder / "metadata.json").read_text())
    pairs = [tuple(p) for p in meta["model_pairs"]]
    assert sorted(pairs) == [("clip", "cnx"), ("vit_a", "cnx"), ("vit_b", "cnx")]
    a, b = _matrices(computed, SLUGS[0])
    table = pd.read_csv(folder / "consistency_spearman.csv", index_col="dataset")
    expected = stats.spearmanr(_upper(a, pairs), _upper(b, pairs))[0]
    assert table.iloc[0, 1] == pytest.approx(expected, abs=1e-12)


def test_too_few_pairs_missing_matrices_and_one_dataset_are_errors(computed, config, capsys):
    argv = _args(computed, config, "--set_a", "objective=clip")
    assert stage.main(argv) == 2
    assert "at least 3 are needed" in capsys.readouterr().err
    assert stage.main(_args(computed, config, "--set_a", "objective")) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert stage.main(_args(computed, config, datasets=["wds/digits"])) == 2
    assert "at least 2 datasets" in capsys.readouterr().err
    missing = computed.location.similarity_dir(computed.datasets[1], SLUGS[1])
    assert stage.main(_args(computed, config, datasets=[computed.datasets[0], "wds/other"])) == 2
    err = capsys.readouterr().err
    assert dataset_slug("wds/other") in err and "distance_matrix_computation" in err
    assert missing.is_dir()


def test_rerun_is_skipped_and_new_matrices_make_it_stale(computed, config, capsys):
    assert stage.main(_args(computed, config)) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert distance_matrix_computation.main(_args(computed, config, "--no-normalize")) == 0
    capsys.readouterr()
    assert stage.main(_args(computed, config)) == 0
    assert "2 job(s): 2 done" in capsys.readouterr().out


def test_script_subprocess_smoke(computed, config):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "consistency.py"), *_args(computed, config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "consistency: nothing to do" in result.stdout


def test_ci_rerun_of_the_matrices_leaves_consistency_reused(
    similarity_project, config, tmp_path, capsys
):
    """``--ci`` changes the matrices' content key but not their numbers: nothing recomputes."""
    proj = similarity_project.copy(tmp_path / "root")
    assert distance_matrix_computation.main(_args(proj, config)) == 0
    assert stage.main(_args(proj, config)) == 0
    folder = proj.location.consistency / SLUGS[0] / "all_pairs"
    before = json.loads((folder / "metadata.json").read_text())
    capsys.readouterr()
    ci = ("--ci", "--ci_groups", "4")
    assert distance_matrix_computation.main(_args(proj, config, *ci)) == 0
    matrix = proj.location.similarity_dir(proj.datasets[0], SLUGS[0])
    meta = json.loads((matrix / "metadata.json").read_text())
    assert meta["content_key"] != meta["point_content_key"]  # the --ci run wrote new outputs
    assert before["input_content_keys"][proj.datasets[0]] == meta["point_content_key"]
    capsys.readouterr()
    assert stage.plan(stage.STAGE.parse(_args(proj, config))) == []
    assert stage.main(_args(proj, config)) == 0
    out = capsys.readouterr().out
    assert "0 output(s) computed" in out or "nothing to do" in out
    # new point numbers (another normalisation) still make it stale
    assert distance_matrix_computation.main(_args(proj, config, "--no-normalize", *ci)) == 0
    assert len(stage.plan(stage.STAGE.parse(_args(proj, config)))) == len(SLUGS)
