"""data/download.py: name -> hub repo / folder mapping, list files, and failing fast offline."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim_consistency.data.download import (
    check_hub_reachable,
    main,
    read_webdataset_names,
    wds_name,
    wds_repo_id,
)
from sim_consistency.errors import ConfigError, OfflineError
from sim_consistency.project import ProjectLocation

REPO = Path(__file__).resolve().parents[2]
UNREACHABLE = "http://127.0.0.1:9"  # discard port: connection refused at once


@pytest.fixture
def unreachable_hub(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.mark.parametrize("name", ["wds/vtab/cifar10", "vtab/cifar10"])
def test_name_to_repo_and_folder(tmp_path, name):
    assert wds_name(name) == "vtab/cifar10"
    assert wds_repo_id(name) == "clip-benchmark/wds_vtab-cifar10"
    location = ProjectLocation.resolve(tmp_path)
    assert location.wds_dataset_dir(wds_name(name)) == tmp_path / "datasets/wds/wds_vtab-cifar10"
    assert wds_repo_id("wds/imagenet1k") == "clip-benchmark/wds_imagenet1k"


def test_names_that_cannot_be_downloaded():
    with pytest.raises(ConfigError, match="cannot be downloaded"):
        wds_repo_id("imagefolder:/data/pets")
    with pytest.raises(ConfigError, match="invalid webdataset name"):
        wds_repo_id("wds/../x")


def test_list_file_parsing(tmp_path):
    listing = tmp_path / "webdatasets.txt"
    listing.write_text("# CLIP_benchmark names\nwds/vtab/cifar10\ncars  # no prefix\n\nwds/cars\n")
    assert read_webdataset_names([str(listing), "vtab/pets"]) == [
        "wds/vtab/cifar10",
        "wds/cars",
        "wds/vtab/pets",
    ]
    listing.write_text("wds/cars\nimagefolder:/x\n")
    with pytest.raises(ConfigError, match=r"webdatasets\.txt, line 2: .*cannot be downloaded"):
        read_webdataset_names([str(listing)])


def test_hub_offline_env_fails_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE"):
        check_hub_reachable()
    assert time.monotonic() - start < 0.5


def test_unreachable_endpoint(unreachable_hub):
    with pytest.raises(
        OfflineError, match=r"cannot reach the Hugging Face hub at http://127\.0\.0\.1:9"
    ):
        check_hub_reachable(timeout_s=3)


def test_silent_endpoint_times_out(monkeypatch):
    """A server that accepts connections but never answers: the probe gives up on time."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        start = time.monotonic()
        with pytest.raises(OfflineError, match="cannot reach"):
            check_hub_reachable(timeout_s=0.5)
        assert time.monotonic() - start < 2


def test_default_hub_from_this_offline_machine(monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.monotonic()
    try:
        check_hub_reachable()
    except OfflineError as exc:
        assert "https://huggingface.co" in str(exc)
    else:
        pytest.skip("the Hugging Face hub is reachable: this machine is online")
    assert time.monotonic() - start < 10


def test_main_offline_names_target_folders(tmp_path, capsys, unreachable_hub):
    listing = tmp_path / "list.txt"
    listing.write_text("wds/vtab/cifar10\n")
    start = time.monotonic()
    code = main(
        ["--datasets", str(listing), "cars", "--splits", "test", "--project_root", str(tmp_path)]
    )
    assert code == 2 and time.monotonic() - start < 10
    err = capsys.readouterr().err
    assert "Traceback" not in err and "cannot reach the Hugging Face hub" in err
    assert str(tmp_path / "datasets/wds/wds_vtab-cifar10") in err
    assert str(tmp_path / "datasets/wds/wds_cars") in err
    assert "clip-benchmark/wds_vtab-cifar10" in err and "test/nshards.txt" in err
    assert not (tmp_path / "datasets").exists()  # nothing written when offline


def test_script_smoke(tmp_path):
    env = {**os.environ, "HF_ENDPOINT": UNREACHABLE}
    env.pop("HF_HUB_OFFLINE", None)
    script = REPO / "scripts/download_ds/download_webdatasets.py"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "--datasets",
            "wds/vtab/cifar10",
            "--project_root",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "cannot reach the Hugging Face hub" in result.stderr
    assert "Traceback" not in result.stderr
    assert str(tmp_path / "datasets/wds/wds_vtab-cifar10") in result.stderr
