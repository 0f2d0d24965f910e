"""Hostile conditions: full disks, read-only roots, foreign caches, worker-side decode errors,
NaN heads, killed and terminated runs, concurrent identical runs, changed data.

Every case must end with exit 2 (143 for SIGTERM), one named message on stderr, no traceback
and no ``.partial`` left; a killed run must leave nothing a reader accepts, and its rerun must
equal a clean run. Stages run as scripts (subprocesses) where the process boundary matters
(signals, DataLoader workers, segfaults), else through ``main`` in-process.

A few random SIGKILLs run by default (and in CI); ``-m stress`` runs 20 per stage, and the
concurrency test 20 times (deselected by default: minutes each).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from safetensors.torch import save_file

from sim_consistency.data import WdsDataset
from sim_consistency.features import inspect_cache, open_cache
from sim_consistency.features.pipeline import plan_outputs
from sim_consistency.project import ProjectLocation
from sim_consistency.stages import distance_matrix_computation, feature_extraction
from sim_consistency.stages import single_model_evaluation as probe_stage

REPO = Path(__file__).resolve().parents[1]
VIT = {"source": "timm", "model_name": "test_vit", "num_classes": 10}
RESNET = {"source": "timm", "model_name": "test_resnet", "num_classes": 0}
SIMILARITY = [{"sim_method": "cka", "sim_kernel": "linear"}, {"sim_method": "mknn", "k": 5}]
N_KILLS_CI = 2
N_KILLS_SLOW = 20


# -- helpers ----------------------------------------------------------------------------------


def _project(root: Path, digits_root: ProjectLocation, dataset: str = "digits") -> ProjectLocation:
    location = ProjectLocation.resolve(root).create()
    os.symlink(digits_root.wds_dataset_dir("digits"), location.wds_dataset_dir(dataset))
    return location


def _config(folder: Path, entries: dict, name: str = "models.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(entries))
    return path


def _extract_args(location: ProjectLocation, config: Path, *extra: str) -> list[str]:
    return [
        "--project_root", str(location.root), "--models_config", str(config),
        "--datasets", "wds/digits", "--splits", "test", "--max_samples", "60",
        "--batch_size", "4", "--num_workers", "0", *extra,
    ]  # fmt: skip


def _script(name: str, args: list[str]) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / f"{name}.py"), *args]


def _run_script(name: str, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(_script(name, args), capture_output=True, text=True, timeout=timeout)


def _assert_one_named_error(stderr: str, *fragments: str) -> None:
    """stderr holds exactly one ``error:`` line, naming ``fragments``, and no traceback."""
    errors = re.findall(r"error: [^\r\n]*", stderr)  # a progress bar may precede it
    assert len(errors) == 1, stderr[-3000:]
    assert "Traceback" not in stderr and "DataLoader worker" not in stderr, stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def _partials(root: Path) -> list[Path]:
    return sorted(root.rglob("*.partial"))


def _cache_digest(path: Path) -> dict:
    with open_cache(path) as cache:
        out = {"keys": cache.keys.tolist(), "labels": cache.labels.tolist()}
        out.update({name: cache.block(name, dtype=None).tobytes() for name in cache.block_names})
        if cache.has_logits:
            out["logits"] = cache.logits.tobytes()
        out["content_key"] = cache.content_key
    return out


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert path.exists(), f"{path} never appeared (exit {proc.poll()})"


# -- full disk, read-only root ----------------------------------------------------------------


def test_full_disk_is_refused_with_path_free_space_and_need(tmpfs_factory, digits_root):
    root = tmpfs_factory("96k")
    location = _project(root, digits_root)
    config = _config(root.parent, {"vit": VIT})
    result = _run_script("feature_extraction", _extract_args(location, config))
    assert result.returncode == 2, result.stderr[-3000:]
    _assert_one_named_error(
        result.stderr, "vit.h5", "no space left on device", "free on that file system", "needs"
    )
    assert _partials(root) == [] and not list(location.features.rglob("*.h5"))


def test_full_disk_while_building_a_dataset_is_a_named_error(tmpfs_factory, tmp_path):
    root = tmpfs_factory("128k")  # wds/digits is built on first use: ~4 MB of shards
    config = _config(tmp_path, {"vit": VIT})
    location = ProjectLocation.resolve(root)
    result = _run_script("feature_extraction", _extract_args(location, config))
    assert result.returncode == 2, result.stderr[-3000:]
    _assert_one_named_error(result.stderr, str(root), "no space left on device")
    assert not [p for p in root.rglob("*") if p.is_file()]  # the half-built dataset is gone


def test_read_only_project_root_is_a_named_error(tmpfs_factory, digits_root):
    root = tmpfs_factory("8m")
    location = _project(root, digits_root)
    config = _config(root.parent, {"vit": VIT})
    subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
    result = _run_script("feature_extraction", _extract_args(location, config))
    assert result.returncode == 2, result.stderr[-3000:]
    _assert_one_named_error(result.stderr, str(root), "read-only file system")
    assert _partials(root) == []


# -- foreign cache files ----------------------------------------------------------------------


def test_foreign_cache_files_are_refused_by_analysis_and_rebuilt_by_extraction(
    tmp_path, digits_root, capsys, caplog
):
    location = _project(tmp_path / "root", digits_root)
    config = _config(tmp_path, {"vit": VIT, "rn": RESNET})
    for split in ("train", "test"):
        for model_id in ("vit", "rn"):
            path = location.feature_file("wds/digits", split, model_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(path, "w") as f:  # another program's file, claiming to be complete
                f.attrs["complete"] = True
    similarity = tmp_path / "similarity.json"
    similarity.write_text(json.dumps(SIMILARITY))
    common = ["--project_root", str(location.root), "--models_config", str(config)]
    capsys.readouterr()
    assert distance_matrix_computation.main([*common, "--similarity_config", str(similarity)]) == 2
    err = capsys.readouterr().err
    _assert_one_named_error(err, "vit.h5", "not a feature cache of ours")
    assert probe_stage.main([*common, "--device", "cpu"]) == 2
    _assert_one_named_error(capsys.readouterr().err, "vit.h5", "not a feature cache of ours")
    assert not list(location.root.rglob("metadata.json"))
    assert not list(location.root.rglob("results.json"))

    assert feature_extraction.main(_extract_args(location, config)) == 0
    assert "not a feature cache of ours" in caplog.text  # named, then rebuilt
    for model_id in ("vit", "rn"):
        assert inspect_cache(
            location.feature_file("wds/digits", "test", model_id), verify=True
        ).is_valid
    assert _partials(location.root) == []


# -- worker-side decode errors, NaN heads -----------------------------------------------------


def test_undecodable_image_in_a_worker_is_one_line(tmp_path, digits_root):
    location = ProjectLocation.resolve(tmp_path / "root").create()
    target = location.wds_dataset_dir("broken")
    shutil.copytree(digits_root.wds_dataset_dir("digits"), target)
    data = WdsDataset(target, "test")
    shard, offset, key = data.shard_of(3), int(data._offsets[3]), data.keys[3]
    raw = bytearray(shard.read_bytes())
    raw[offset : offset + 16] = b"\x00" * 16  # the image's header: not a decodable image
    shard.write_bytes(bytes(raw))
    config = _config(tmp_path, {"vit": VIT})
    args = [
        "--project_root", str(location.root), "--models_config", str(config),
        "--datasets", "wds/broken", "--splits", "test", "--num_workers", "2",
    ]  # fmt: skip
    result = _run_script("feature_extraction", args)
    assert result.returncode == 2, result.stderr[-3000:]
    _assert_one_named_error(result.stderr, str(shard), f"sample '{key}'", "cannot decode")
    assert _partials(location.root) == [] and not list(location.features.rglob("*.h5"))


def test_nan_in_the_classification_head_only_is_refused(tmp_path, digits_root, capsys):
    from sim_consistency.config import load_models_config
    from sim_consistency.models import create_model

    location = _project(tmp_path / "root", digits_root)
    base = _config(tmp_path, {"vit": VIT}, "base.json")
    specs = load_models_config(base, base_dir=location.root)
    state = create_model(specs["vit"], specs, location=location).model.state_dict()
    state = {k: v.clone().contiguous() for k, v in state.items()}
    state["head.weight"][3, 0] = float("nan")
    checkpoint = tmp_path / "nan_head.safetensors"
    save_file(state, str(checkpoint))
    config = _config(
        tmp_path,
        {"vit": VIT, "bad": {"source": "checkpoint", "arch": "vit", "path": str(checkpoint)}},
    )
    capsys.readouterr()
    assert feature_extraction.main(_extract_args(location, config, "--model_key", "bad")) == 2
    _assert_one_named_error(capsys.readouterr().err, "bad.h5", "logits has NaN/inf")
    assert _partials(location.root) == [] and not list(location.features.rglob("*.h5"))


# -- killed, terminated and concurrent runs ---------------------------------------------------


def test_killed_force_run_leaves_a_partial_that_the_next_run_removes(tmp_path, digits_root):
    location = _project(tmp_path / "root", digits_root)
    config = _config(tmp_path, {"vit": VIT})
    args = _extract_args(location, config)
    assert feature_extraction.main(args) == 0
    path = location.feature_file("wds/digits", "test", "vit")
    before = _cache_digest(path)
    partial = Path(f"{path}.partial")
    proc = subprocess.Popen(
        _script("feature_extraction", [*args, "--force"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for(partial, proc)
    proc.kill()
    proc.wait()
    assert partial.exists() and _cache_digest(path) == before  # the old file is still valid
    assert feature_extraction.main(args) == 0  # up to date: skipped, and the leftover removed
    assert not partial.exists() and _cache_digest(path) == before


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_mid_extraction_removes_partials_and_exits_143(tmp_path, digits_root, workers):
    """SIGTERM as SLURM sends it: to the whole process group (DataLoader workers included,
    whose deaths must not interrupt the main process's clean-up: see tests/test_io.py)."""
    location = _project(tmp_path / "root", digits_root)
    config = _config(tmp_path, {"vit": VIT})
    path = location.feature_file("wds/digits", "test", "vit")
    args = _extract_args(  # ~1,400 rows one by one: still running when the signal comes
        location, config, "--max_samples", "100000", "--splits", "test", "train",
        "--batch_size", "1", "--num_workers", str(workers),
    )  # fmt: skip
    proc = subprocess.Popen(
        _script("feature_extraction", args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _wait_for(Path(f"{path}.partial"), proc)
    time.sleep(1.0)  # batches are being written
    assert proc.poll() is None, "the run ended before the signal; make it longer"
    os.killpg(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert "terminated (SIGTERM)" in stderr and "Traceback" not in stderr
    assert "DataLoader worker" not in stderr and "Process " not in stderr
    lines = [line for line in stderr.splitlines() if line.strip() and "img/s" not in line]
    assert lines == ["terminated (SIGTERM): partial outputs removed; rerun to resume"], stderr
    assert _partials(location.root) == [] and not path.exists()


def _check_nothing_half_written_is_accepted(location: ProjectLocation) -> None:
    for path in location.features.rglob("*.h5"):
        assert inspect_cache(path, verify=True).is_valid, path
    for partial in _partials(location.root):
        assert not inspect_cache(partial).is_valid


@pytest.fixture(scope="module")
def clean_extraction(tmp_path_factory, digits_root):
    """A clean run of two models (the reference a resumed run must equal)."""
    root = tmp_path_factory.mktemp("clean")
    location = _project(root / "root", digits_root)
    config = _config(root, {"vit": VIT, "rn": RESNET})
    assert feature_extraction.main(_extract_args(location, config)) == 0
    return location, config


def _random_kills_of_extraction(tmp_path, digits_root, clean_extraction, n_kills: int) -> None:
    clean, _ = clean_extraction
    location = _project(tmp_path / "root", digits_root)
    config = _config(tmp_path, {"vit": VIT, "rn": RESNET})
    args = _extract_args(location, config)
    rng = random.Random(0)
    for _ in range(n_kills):
        proc = subprocess.Popen(
            _script("feature_extraction", [*args, "--force"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        first = location.feature_file("wds/digits", "test", "vit")
        _wait_for(Path(f"{first}.partial"), proc)
        time.sleep(rng.uniform(0.0, 3.0))
        proc.kill()
        proc.wait()
        _check_nothing_half_written_is_accepted(location)
    assert feature_extraction.main(args) == 0
    assert _partials(location.root) == []
    for model_id in ("vit", "rn"):
        resumed = _cache_digest(location.feature_file("wds/digits", "test", model_id))
        assert resumed == _cache_digest(clean.feature_file("wds/digits", "test", model_id))


def test_random_sigkills_of_extraction(tmp_path, digits_root, clean_extraction):
    _random_kills_of_extraction(tmp_path, digits_root, clean_extraction, N_KILLS_CI)


@pytest.mark.slow
@pytest.mark.stress
def test_random_sigkills_of_extraction_20(tmp_path, digits_root, clean_extraction):
    _random_kills_of_extraction(tmp_path, digits_root, clean_extraction, N_KILLS_SLOW)


def _matrix(folder: Path) -> np.ndarray:
    with h5py.File(folder / "similarity_matrix.h5", "r") as f:
        return f["similarity_matrix"][()]


def _random_kills_of_similarity(tmp_path, clean_extraction, n_kills: int) -> None:
    clean, config = clean_extraction
    similarity = tmp_path / "similarity.json"
    similarity.write_text(json.dumps(SIMILARITY))
    reference_root = tmp_path / "reference"
    shutil.copytree(clean.root, reference_root, symlinks=True)
    work_root = tmp_path / "work"
    shutil.copytree(clean.root, work_root, symlinks=True)
    args = ["--models_config", str(config), "--similarity_config", str(similarity)]
    ref_args = ["--project_root", str(reference_root), *args]
    assert distance_matrix_computation.main(ref_args) == 0
    reference = ProjectLocation(reference_root)
    work = ProjectLocation(work_root)
    rng = random.Random(1)
    for _ in range(n_kills):
        proc = subprocess.Popen(
            _script(
                "distance_matrix_computation", ["--project_root", str(work_root), *args, "--force"]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(2.0, 8.0))  # interpreter start-up is most of the run
        proc.kill()
        proc.wait()
        for metadata in work.model_similarities.rglob("metadata.json"):  # complete folders only
            folder = metadata.parent
            ref = reference.model_similarities / folder.relative_to(work.model_similarities)
            np.testing.assert_array_equal(_matrix(folder), _matrix(ref))
    assert distance_matrix_computation.main(["--project_root", str(work_root), *args]) == 0
    assert _partials(work_root) == []
    for metadata in reference.model_similarities.rglob("metadata.json"):
        folder = work.model_similarities / metadata.parent.relative_to(reference.model_similarities)
        np.testing.assert_array_equal(_matrix(folder), _matrix(metadata.parent))


def test_random_sigkills_of_an_analysis_stage(tmp_path, clean_extraction):
    _random_kills_of_similarity(tmp_path, clean_extraction, N_KILLS_CI)


@pytest.mark.slow
@pytest.mark.stress
def test_random_sigkills_of_an_analysis_stage_20(tmp_path, clean_extraction):
    _random_kills_of_similarity(tmp_path, clean_extraction, N_KILLS_SLOW)


def _two_identical_runs(tmp_path: Path, digits_root: ProjectLocation) -> None:
    location = _project(tmp_path / "root", digits_root)
    config = _config(tmp_path, {"vit": VIT})
    command = _script("feature_extraction", _extract_args(location, config))
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(proc.wait(timeout=900), proc.stderr.read()) for proc in procs]
    for code, stderr in results:
        assert code == 0, stderr[-3000:]
        assert "error" not in stderr.lower() and "Traceback" not in stderr
    path = location.feature_file("wds/digits", "test", "vit")
    assert inspect_cache(path, verify=True).is_valid
    assert [p.name for p in path.parent.iterdir()] == ["vit.h5"]


def test_two_concurrent_identical_runs_leave_one_valid_file(tmp_path, digits_root):
    _two_identical_runs(tmp_path, digits_root)


@pytest.mark.slow
@pytest.mark.stress
@pytest.mark.parametrize("attempt", range(20))
def test_two_concurrent_identical_runs_20_times(tmp_path, digits_root, attempt):
    _two_identical_runs(tmp_path, digits_root)


# -- changed data reaches every output ----------------------------------------------------------


@pytest.mark.parametrize("change", ["pixels", "labels"])
def test_changed_pixels_or_labels_under_the_same_keys_recompute_everything(
    tmp_path, digits_root, change
):
    location = ProjectLocation.resolve(tmp_path / "root").create()
    target = location.wds_dataset_dir("copy")
    shutil.copytree(digits_root.wds_dataset_dir("digits"), target)
    config = _config(tmp_path, {"vit": VIT, "rn": RESNET})
    common = ["--project_root", str(location.root), "--models_config", str(config),
              "--datasets", "wds/copy"]  # fmt: skip
    extract = [*common, "--max_samples", "60", "--num_workers", "0"]
    similarity = tmp_path / "similarity.json"
    similarity.write_text(json.dumps(SIMILARITY[:1]))
    matrix_args = [*common, "--similarity_config", str(similarity)]
    probe_args = [*common, "--device", "cpu", "--model_key", "vit"]
    assert feature_extraction.main(extract) == 0
    assert distance_matrix_computation.main(matrix_args) == 0
    assert probe_stage.main(probe_args) == 0
    old = _cache_digest(location.feature_file("wds/copy", "test", "vit"))

    for split in ("train", "test"):  # re-built shards: same keys, other content
        _rebuild_shards(target / split, change)

    settings = feature_extraction.STAGE.parse(extract)
    assert {item.reason for item in plan_outputs(settings)} == {"stale"}
    assert feature_extraction.main(extract) == 0
    new = _cache_digest(location.feature_file("wds/copy", "test", "vit"))
    assert new["content_key"] != old["content_key"]
    if change == "pixels":  # same rows, other features
        assert new["keys"] == old["keys"] and new["labels"] == old["labels"]
        features = [k for k in old if k not in ("keys", "labels", "content_key")]
        assert all(new[k] != old[k] for k in features)
    else:  # the stratified subset follows the labels; the labels are the new ones
        assert new["labels"] != old["labels"]
    matrix_settings = distance_matrix_computation.STAGE.parse(matrix_args)
    plans = distance_matrix_computation.plan(matrix_settings)
    assert [o.reason for item in plans for o in item.outputs] == ["stale"]
    probe_settings = probe_stage.STAGE.parse(probe_args)
    assert {item.reason for item in probe_stage.plan(probe_settings)} == {"stale"}


def _rebuild_shards(split_dir: Path, change: str) -> None:
    """Rewrite every shard with the same members: images mirrored, or labels ``d -> 9 - d``."""
    import io
    import tarfile

    from PIL import Image

    for shard in sorted(split_dir.glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()]
        with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
            for member, payload in members:
                if change == "labels" and member.name.endswith(".cls"):
                    payload = str(9 - int(payload.decode().strip())).encode()
                elif change == "pixels" and not member.name.endswith(".cls"):
                    image = Image.open(io.BytesIO(payload))
                    out = io.BytesIO()
                    image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(out, format=image.format)
                    payload = out.getvalue()
                info = tarfile.TarInfo(member.name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


# -- corrupt caches: found by the reader, set aside, rebuilt by the next extraction ------------


def _flip_a_byte(path: Path, dataset: str) -> None:
    with h5py.File(path, "r") as f:
        offset = f[dataset].id.get_chunk_info(0).byte_offset + 7
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def test_a_flipped_byte_fails_the_analysis_stage_and_the_next_extraction_rebuilds(
    tmp_path, digits_root, capsys
):
    location = _project(tmp_path / "root", digits_root)
    config = _config(tmp_path, {"vit": VIT, "rn": RESNET})
    assert feature_extraction.main(_extract_args(location, config)) == 0
    path = location.feature_file("wds/digits", "test", "vit")
    clean = _cache_digest(path)
    with open_cache(path) as cache:
        last_block = cache.block_names[-1]  # the block similarity reads by default
    _flip_a_byte(path, f"blocks/{last_block}")

    similarity = tmp_path / "similarity.json"
    similarity.write_text(json.dumps(SIMILARITY[:1]))
    common = ["--project_root", str(location.root), "--models_config", str(config)]
    capsys.readouterr()
    assert distance_matrix_computation.main([*common, "--similarity_config", str(similarity)]) == 2
    _assert_one_named_error(
        capsys.readouterr().err, "vit.h5", f"/blocks/{last_block} fails its checksum",
        "moved to vit.h5.corrupt", "rerun feature_extraction",
    )  # fmt: skip
    assert not path.exists() and Path(f"{path}.corrupt").exists()

    args = _extract_args(location, config)
    settings = feature_extraction.STAGE.parse(args)
    assert [(i.model_id, i.split, i.reason) for i in plan_outputs(settings)] == [
        ("vit", "test", "missing")
    ]
    assert feature_extraction.main(args) == 0
    assert _cache_digest(path) == clean  # rebuilt, equal to the clean file
    assert distance_matrix_computation.main([*common, "--similarity_config", str(similarity)]) == 0


def test_planning_reads_no_feature_data_unless_verify(tmp_path, digits_root, monkeypatch):
    """Planning cost must not grow with cache size: an up-to-date project is planned from
    attributes and shapes alone; ``--verify`` reads every dataset back."""
    location = _project(tmp_path / "root", digits_root)
    config = _config(tmp_path, {"vit": VIT, "rn": RESNET})
    args = _extract_args(location, config)
    assert feature_extraction.main(args) == 0

    reads: list[str] = []
    original = h5py.Dataset.__getitem__

    def counting(self, *a, **kw):
        reads.append(self.name)
        return original(self, *a, **kw)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counting)

    def planned(*extra: str) -> list:
        return plan_outputs(feature_extraction.STAGE.parse([*args, *extra]))

    assert planned() == [] and reads == []
    _flip_a_byte(location.feature_file("wds/digits", "test", "rn"), "labels")
    assert planned() == [] and reads == []  # not seen here: the reader will find it
    items = planned("--verify")
    assert any(name.startswith("/blocks/") for name in reads)
    assert [(i.model_id, i.split, i.reason) for i in items] == [("rn", "test", "invalid")]
