"""distance_matrix_computation end to end on cached digits features of tiny real models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from sim_consistency.config.similarity import load_similarity_config
from sim_consistency.features import FeatureCache, keys_fingerprint, open_cache
from sim_consistency.similarity import cka, l2_normalize, metric_slug, mutual_knn, rsa
from sim_consistency.similarity.matrix_files import read_similarity_matrix
from sim_consistency.stages import distance_matrix_computation as stage

REPO = Path(__file__).resolve().parents[2]
METRICS = [
    {"sim_method": "cka", "sim_kernel": "linear", "unbiased": True},
    {"sim_method": "cka", "sim_kernel": "linear", "unbiased": False},
    {"sim_method": "cka", "sim_kernel": "rbf", "unbiased": True, "sigma": 0.4},
    {"sim_method": "rsa", "rsa_method": "correlation", "corr_method": "spearman"},
    {"sim_method": "mknn", "k": 5},
]


@pytest.fixture(scope="module")
def metrics_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("similarity_config") / "metrics.json"
    path.write_text(json.dumps(METRICS))
    return path


def _args(proj, config, *extra, datasets=None):
    return [
        "--project_root",
        str(proj.location.root),
        "--models_config",
        str(proj.models_config),
        "--datasets",
        *(datasets or proj.datasets[:1]),
        "--similarity_config",
        str(config),
        *extra,
    ]


@pytest.fixture(scope="module")
def computed(similarity_project, metrics_config, tmp_path_factory):
    """A private copy of the project with every matrix of ``wds/digits`` computed once."""
    proj = similarity_project.copy(tmp_path_factory.mktemp("dmc") / "root")
    assert stage.main(_args(proj, metrics_config)) == 0
    return proj


def _last_blocks(proj, dataset="wds/digits"):
    ids = list(json.loads(proj.models_config.read_text()))
    out = {}
    for model_id in ids:
        with open_cache(proj.location.feature_file(dataset, "test", model_id)) as cache:
            out[model_id] = (cache.block_names[-1], cache.block(cache.block_names[-1]))
    return ids, out


def test_layout_and_values_match_the_public_api(computed, metrics_config):
    ids, blocks = _last_blocks(computed)
    feats = [l2_normalize(blocks[m][1]) for m in ids]
    reference = {
        "cka_kernel_linear_unbiased": lambda x, y: cka(x, y, unbiased=True),
        "cka_kernel_linear_biased": lambda x, y: cka(x, y),
        "cka_kernel_rbf_unbiased_sigma_0.4": lambda x, y: cka(
            x, y, kernel="rbf", sigma=0.4, unbiased=True
        ),
        "rsa_method_correlation_corr_method_spearman": rsa,
        "mknn_k_5": lambda x, y: mutual_knn(x, y, k=5),
    }
    assert [metric_slug(s) for s in load_similarity_config(metrics_config)] == list(reference)
    for slug, fn in reference.items():
        folder = computed.location.similarity_dir("wds/digits", slug)
        assert (folder / "model_ids.txt").read_text().split() == ids
        with h5py.File(folder / "similarity_matrix.h5") as f:
            matrix = f["similarity_matrix"][()]
            assert list(f["model_ids"].asstr()[()]) == ids
        csv = pd.read_csv(folder / "similarity_matrix.csv", index_col="model_id")
        assert list(csv.index) == ids and list(csv.columns) == ids
        np.testing.assert_allclose(csv.to_numpy(), matrix, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(matrix, matrix.T)
        np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-12)
        expected = np.array([[fn(a, b) for b in feats] for a in feats])
        np.testing.assert_allclose(matrix, expected, atol=1e-10)
        meta = json.loads((folder / "metadata.json").read_text())
        assert meta["metric_slug"] == slug and meta["normalize"] is True
        assert meta["blocks"] == {m: blocks[m][0] for m in ids}
        assert meta["n_samples"] == 32 and meta["estimator"]
        assert set(meta["input_content_keys"]) == set(ids)
        assert not list(folder.glob("*.partial"))


def test_biased_linear_cka_matrix_is_psd(computed):
    folder = computed.location.similarity_dir("wds/digits", "cka_kernel_linear_biased")
    with h5py.File(folder / "similarity_matrix.h5") as f:
        matrix = f["similarity_matrix"][()]
    assert np.linalg.eigvalsh(matrix).min() > -1e-10


def test_each_cache_read_once_per_job(similarity_project, metrics_config, tmp_path, monkeypatch):
    proj = similarity_project.copy(tmp_path / "root")
    reads: list[tuple[str, str]] = []
    original = FeatureCache.block

    def counting_block(self, name, *args, **kwargs):
        reads.append((self.path.name, name))
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(FeatureCache, "block", counting_block)
    assert stage.main(_args(proj, metrics_config)) == 0
    # five metrics, four models: each file's block is read exactly once
    assert sorted(reads) == sorted(set(reads)) and len(reads) == 4


def test_up_to_date_outputs_are_skipped_stale_ones_rebuilt(computed, metrics_config):
    settings = stage.STAGE.parse(_args(computed, metrics_config))
    assert stage.plan(settings) == []
    forced = stage.plan(stage.STAGE.parse(_args(computed, metrics_config, "--force")))
    assert [o.reason for o in forced[0].outputs] == ["forced"] * 5
    other = stage.plan(stage.STAGE.parse(_args(computed, metrics_config, "--no-normalize")))
    assert [o.reason for o in other[0].outputs] == ["stale"] * 5
    block = stage.plan(
        stage.STAGE.parse(
            _args(computed, metrics_config, "--block", "blocks.0", "--model_key", "vit_a", "vit_b")
        )
    )
    assert [o.reason for o in block[0].outputs] == ["stale"] * 5


def test_mismatched_keys_name_both_files_and_write_nothing(
    similarity_project, metrics_config, tmp_path, capsys
):
    proj = similarity_project.copy(tmp_path / "root")
    path = proj.location.feature_file("wds/digits", "test", "cnx")
    with h5py.File(path, "r+") as f:
        keys = f["keys"].asstr()[()]
        keys[3] = "not-a-digit"
        del f["keys"]
        f.create_dataset("keys", data=list(keys), dtype=h5py.string_dtype())
        f.attrs["keys_sha256"] = keys_fingerprint(list(keys))  # a cache built on other rows
    assert stage.main(_args(proj, metrics_config)) == 2
    err = capsys.readouterr().err
    assert "vit_a.h5" in err and "cnx.h5" in err and "not-a-digit" in err
    assert not proj.location.model_similarities.exists() or not any(
        proj.location.model_similarities.rglob("*.h5")
    )


def test_unknown_block_and_missing_cache_are_named(
    similarity_project, metrics_config, tmp_path, capsys
):
    proj = similarity_project.copy(tmp_path / "root")
    assert stage.main(_args(proj, metrics_config, "--block", "nope")) == 2
    assert "--block 'nope'" in capsys.readouterr().err
    proj.location.feature_file("wds/digits", "test", "clip").unlink()
    assert stage.main(_args(proj, metrics_config)) == 2
    assert "clip.h5" in capsys.readouterr().err


@pytest.mark.slow
def test_script_subprocess_smoke(computed, metrics_config):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "distance_matrix_computation.py"),
            *_args(computed, metrics_config),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout  # everything up to date


def test_wandb_writes_an_offline_run(similarity_project, metrics_config, tmp_path, monkeypatch):
    """``--wandb`` on a similarity stage (shared ``stage_main``) logs config, metrics, table."""
    from tests.cluster.test_tracking import read_wandb_records

    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    proj = similarity_project.copy(tmp_path / "root")
    assert stage.main([*_args(proj, metrics_config), "--wandb"]) == 0
    runs = list((proj.location.logs / "wandb").rglob("run-*.wandb"))
    assert len(runs) == 1, runs
    text = str(read_wandb_records(runs[0]))
    assert "distance_matrix_computation" in text and "n_items" in text and "outputs" in text


def test_planner_removes_a_killed_runs_partial_files(tmp_path):
    from sim_consistency.io import atomic_output, partial_path
    from sim_consistency.outputs import folder_plan_reason

    folder = tmp_path / "out"
    folder.mkdir()
    leftover = partial_path(folder / "similarity_matrix.h5")
    leftover.write_bytes(b"half")
    with atomic_output(folder / "model_ids.txt") as live:  # a concurrent writer's: kept
        assert folder_plan_reason(folder, "k", ("similarity_matrix.h5", "model_ids.txt"), False)
        assert not leftover.exists() and live.exists()


def test_tiny_memory_budget_and_device_give_the_same_matrices(
    computed, similarity_project, metrics_config, tmp_path
):
    proj = similarity_project.copy(tmp_path / "root")
    extra = ("--memory_budget", "1K", "--device", "cpu")
    assert stage.main(_args(proj, metrics_config, *extra)) == 0
    for spec in load_similarity_config(metrics_config):
        slug = metric_slug(spec)
        folder = proj.location.similarity_dir("wds/digits", slug)
        new = read_similarity_matrix(folder).to_numpy()
        old = read_similarity_matrix(computed.location.similarity_dir("wds/digits", slug))
        assert np.nanmax(np.abs(new - old.to_numpy())) <= 1e-9
        meta = json.loads((folder / "metadata.json").read_text())
        assert meta["memory_budget_bytes"] == 1024 and meta["device"] == "numpy"
        assert meta["precision"].startswith("float64")
        assert not list(folder.glob("*.scratch"))  # RSA ranks spilled here, then removed


def test_bad_memory_budget_exits_2(similarity_project, metrics_config, capsys):
    assert stage.main(_args(similarity_project, metrics_config, "--memory_budget", "lots")) == 2
    assert "memory_budget" in capsys.readouterr().err
    assert stage.main(_args(similarity_project, metrics_config, "--device", "tpu")) == 2
    assert "device" in capsys.readouterr().err
