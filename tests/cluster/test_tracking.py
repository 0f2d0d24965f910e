"""``--wandb``: offline runs with the stage's config, metrics and tables; off by default."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from sim_consistency.project import ProjectLocation
from sim_consistency.stages import feature_extraction
from sim_consistency.tracking import start_tracking, wandb_mode


def read_wandb_records(path: Path) -> list:
    """Decode an offline ``run-*.wandb`` file (wandb's LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb transaction log"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # zero padding up to the end of the block
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 2):  # full / first fragment
            pending = chunk
        else:  # middle / last fragment
            pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    """No user wandb configuration: no mode, no key, no netrc; caches in tmp."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))


def test_mode_is_offline_unless_the_user_configured_wandb(tmp_path):
    missing = tmp_path / "none"
    assert wandb_mode({}, netrc_file=missing) == "offline"
    assert wandb_mode({"WANDB_MODE": "disabled"}, netrc_file=missing) == "disabled"
    assert wandb_mode({"WANDB_API_KEY": "k" * 40}, netrc_file=missing) == "online"
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert wandb_mode({}, netrc_file=netrc) == "online"


def test_tracking_is_off_by_default(tmp_path):
    location = ProjectLocation.resolve(tmp_path / "root")
    with start_tracking(False, stage="s", config={"a": 1}, location=location) as tracker:
        tracker.log_metrics({"x": 1.0})
        tracker.log_table("t", [{"a": 1}])
        assert not tracker.enabled and tracker.run_dir is None
    assert not (location.logs / "wandb").exists()


@pytest.mark.slow
def test_feature_extraction_wandb_writes_an_offline_run(wandb_env, tmp_path, digits_root):
    location = ProjectLocation.resolve(tmp_path / "root").create()
    location.wds_dataset_dir("digits").symlink_to(digits_root.wds_dataset_dir("digits"))
    config = tmp_path / "models.json"
    config.write_text(json.dumps({"rn": {"source": "timm", "model_name": "test_resnet"}}))
    argv = [
        "--project_root", str(location.root), "--models_config", str(config),
        "--splits", "test", "--max_samples", "20", "--num_workers", "0", "--device", "cpu",
        "--wandb",
    ]  # fmt: skip
    assert feature_extraction.main(argv) == 0

    (run_dir,) = (location.logs / "wandb" / "wandb").glob("offline-run-*")
    records = read_wandb_records(next(run_dir.glob("run-*.wandb")))
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "run" in kinds and "exit" in kinds
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    config_items = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config_items["max_samples"] == 20
    assert config_items["launcher"] == "local"
    assert config_items["model_ids"] == ["rn"]
    assert run.job_type == "feature_extraction"
    summary = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                summary[item.key or ".".join(item.nested_key)] = json.loads(item.value_json)
    assert summary["n_files_written"] == 1 and summary["n_jobs_failed"] == 0
    (table_file,) = (run_dir / "files" / "media" / "table").glob("written_files_*.table.json")
    table = json.loads(table_file.read_text())
    row = dict(zip(table["columns"], table["data"][0], strict=True))
    assert row["model_id"] == "rn" and row["split"] == "test" and row["n_rows"] == 20
    assert row["path"] == str(location.feature_file("wds/digits", "test", "rn"))
