"""Feature extraction through ``--launcher slurm`` on the real local cluster equals a local run."""

from __future__ import annotations

import json

import h5py
import pytest
import torch

from sim_consistency.launch import read_failed_jobs
from sim_consistency.stages import feature_extraction

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

MODELS = {
    "vit": {"source": "timm", "model_name": "test_vit", "num_classes": 10},
    "rn": {"source": "timm", "model_name": "test_resnet", "num_classes": 0},
}
DATASETS = ("wds/digits", "wds/digits_rotated")


def _extract(location, config, *extra):
    return feature_extraction.main(
        [
            "--project_root", str(location.root),
            "--models_config", str(config),
            "--datasets", *DATASETS,
            "--splits", "test",
            "--max_samples", "30",
            "--batch_size", "16",
            "--num_workers", "0",
            "--device", "cpu",
            *extra,
        ]
    )  # fmt: skip


def _arrays(path):
    with h5py.File(path, "r") as f:
        out = {name: f["blocks"][name][()] for name in f["blocks"]}
        out["keys"] = f["keys"].asstr()[()].tolist()
        out["labels"] = f["labels"][()]
        if "logits" in f:
            out["logits"] = f["logits"][()]
        return out, f.attrs["content_key"]


def _files(location):
    return sorted(p.relative_to(location.features) for p in location.features.rglob("*.h5"))


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "models.json"
    path.write_text(json.dumps(MODELS))
    return path


@pytest.fixture(scope="module")
def local_root(new_root, config):
    location = new_root("local")
    assert _extract(location, config) == 0
    return location


def _job_dirs(location):
    folder = location.logs / "slurm" / "feature_extraction"
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and "_" in p.name)


def _assert_equal_to(location, reference):
    files = _files(location)
    assert files == _files(reference) and len(files) == 4  # 2 models x 2 datasets x 1 split
    for relative in files:
        ours, our_key = _arrays(location.features / relative)
        theirs, their_key = _arrays(reference.features / relative)
        assert our_key == their_key
        assert ours.keys() == theirs.keys()
        assert ours.pop("keys") == theirs.pop("keys")
        for name, array in theirs.items():
            assert ours[name].dtype == array.dtype
            assert ours[name].tobytes() == array.tobytes(), f"{relative}:{name} differs"
    return files


def test_one_job_per_model_equals_local_and_rerun_submits_nothing(
    slurm_cluster, new_root, local_root, config, capsys
):
    location = new_root("slurm_per_model")
    code = _extract(location, config, "--launcher", "slurm", "--slurm_config", "debug")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 job(s): 2 done, 0 failed" in out
    files = _assert_equal_to(location, local_root)
    assert len(_job_dirs(location)) == 2  # one array task per model
    mtimes = {p: (location.features / p).stat().st_mtime_ns for p in files}

    assert _extract(location, config, "--launcher", "slurm", "--slurm_config", "debug") == 0
    assert "nothing to do" in capsys.readouterr().out
    assert len(_job_dirs(location)) == 2  # no job was submitted
    assert {p: (location.features / p).stat().st_mtime_ns for p in files} == mtimes
    assert not (location.logs / "failed_jobs.tsv").exists()


def test_array_over_model_x_dataset_resubmits_only_what_is_missing(
    slurm_cluster, new_root, local_root, config, capsys
):
    location = new_root("slurm_per_dataset")
    assert _extract(location, config, "--model_key", "rn") == 0  # rn done locally
    capsys.readouterr()
    code = _extract(location, config, "--launcher", "slurm", "--slurm_config", "debug",
                    "--job_per", "model_dataset")  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 job(s): 2 done, 0 failed" in out  # vit x 2 datasets; rn was up to date
    assert len(_job_dirs(location)) == 2
    _assert_equal_to(location, local_root)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="needs a node without CUDA to fail on purpose"
)
def test_failed_jobs_are_listed_and_write_nothing(slurm_cluster, new_root, config, capsys):
    location = new_root("failing")
    # The submitter plans on the CPU; every job then asks for CUDA, which the node lacks.
    code = _extract(location, config, "--launcher", "slurm", "--slurm_config", "debug",
                    "--device", "cuda")  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    assert "2 job(s): 0 done, 2 failed" in captured.out
    rows = read_failed_jobs(location.logs / "failed_jobs.tsv")
    assert sorted(row["work_item"] for row in rows) == ["rn", "vit"]
    for row in rows:
        assert row["stage"] == "feature_extraction"
        assert row["job_id"].split("_")[0].isdigit()
        assert "CUDA is not available" in row["error"]
        assert row["log"].endswith(".err")
    assert _files(location) == []
    assert not list(location.features.rglob("*.partial"))
