"""Feature extraction end to end on the digits webdataset with tiny real models."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import timm
import torch

from sim_consistency.data import load_dataset
from sim_consistency.features import open_cache
from sim_consistency.stages import feature_extraction

REPO = Path(__file__).resolve().parents[2]
TIMM_MODELS = {
    "vit": {"source": "timm", "model_name": "test_vit", "num_classes": 10},
    "cnx": {"source": "timm", "model_name": "test_convnext", "num_classes": 10},
    "rn": {"source": "timm", "model_name": "test_resnet", "num_classes": 0},
}


def _run(project, config, *extra):
    return feature_extraction.main(
        [
            "--project_root",
            str(project.root),
            "--models_config",
            str(config),
            "--datasets",
            "wds/digits",
            "--splits",
            "test",
            "--max_samples",
            "40",
            "--batch_size",
            "16",
            "--num_workers",
            "0",
            *extra,
        ]
    )


def _digest(path):
    with h5py.File(path, "r") as f:
        out = {"keys": f["keys"].asstr()[()].tolist(), "labels": f["labels"][()].tolist()}
        for name in f["blocks"]:
            out[name] = f["blocks"][name][()].tobytes()
        if "logits" in f:
            out["logits"] = f["logits"][()].tobytes()
        out["content_key"] = f.attrs["content_key"]
    return out


@pytest.mark.slow
def test_layout_attributes_and_alignment(project, models_config, tiny_open_clip):
    clip = {"clip": {"source": "open_clip", "model_name": "simc-tiny-vit", "pooling": "mean_patch"}}
    config = models_config({**TIMM_MODELS, **clip})
    assert _run(project, config) == 0
    rows = load_dataset("wds/digits", "test", location=project, max_samples=40)
    with open_cache(project.feature_file("wds/digits", "test", "clip")) as cache:
        assert cache.keys.tolist() == rows.keys
        assert cache.block_names == [
            "visual.transformer.resblocks.0",
            "visual.transformer.resblocks.1",
        ]
        assert cache.block("visual.transformer.resblocks.1").shape == (40, 64)
        assert cache.attrs["pooling"] == "mean_patch" and not cache.has_logits
        assert cache.attrs["preprocessing"]["input_size"][-1] == 32
    for model_id, entry in TIMM_MODELS.items():
        path = project.feature_file("wds/digits", "test", model_id)
        assert path.is_file() and not Path(str(path) + ".partial").exists()
        with open_cache(path) as cache:
            assert cache.keys.tolist() == rows.keys
            assert cache.labels.tolist() == rows.labels.tolist()
            attrs = cache.attrs
            assert attrs["complete"] is True and attrs["n_rows"] == 40
            assert attrs["model_id"] == model_id and len(attrs["content_key"]) == 64
            assert attrs["recipe"]["model_name"] == entry["model_name"]
            assert len(attrs["weights_sha256"]) == 64
            assert attrs["preprocessing"]["input_size"][-1] == 160
            assert attrs["dtype"] == "float16" and "torch" in attrs["library_versions"]
            assert cache.has_logits == (entry["num_classes"] > 0)
            for name in cache.block_names:
                assert cache.block(name).shape[0] == 40
    with open_cache(project.feature_file("wds/digits", "test", "vit")) as cache:
        model = timm.create_model("test_vit")
        assert cache.block_names == [f"blocks.{i}" for i in range(len(model.blocks))]
        assert set(cache.attrs["block_pooling"].values()) == {"cls"}
    with open_cache(project.feature_file("wds/digits", "test", "cnx")) as cache:
        assert cache.block_names[0] == "stages.0.blocks.0"
        assert set(cache.attrs["block_pooling"].values()) == {"gap"}
    with open_cache(project.feature_file("wds/digits", "test", "rn")) as cache:
        assert cache.block_names[0] == "layer1.0"


@pytest.mark.slow
def test_skip_rebuild_force(project, models_config, caplog):
    config = models_config({"vit": TIMM_MODELS["vit"]})
    path = project.feature_file("wds/digits", "test", "vit")
    assert _run(project, config) == 0
    first = _digest(path)
    mtime = path.stat().st_mtime_ns
    caplog.clear()
    assert _run(project, config) == 0
    assert path.stat().st_mtime_ns == mtime
    assert "up to date" in caplog.text
    # Another pooling is another content key: the stale file is rebuilt, not reused.
    config = models_config({"vit": {**TIMM_MODELS["vit"], "pooling": "mean_patch"}})
    caplog.clear()
    assert _run(project, config) == 0
    assert "content key changed" in caplog.text
    rebuilt = _digest(path)
    assert rebuilt["content_key"] != first["content_key"]
    assert rebuilt["blocks.0"] != first["blocks.0"]
    mtime = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert _run(project, config, "--force") == 0
    assert path.stat().st_mtime_ns != mtime
    assert _digest(path) == rebuilt  # deterministic: bitwise identical on CPU


@pytest.mark.slow
def test_vit_parity_with_forward_intermediates_and_logits(project, models_config):
    config = models_config({"vit": {**TIMM_MODELS["vit"], "pooling": "mean_patch"}})
    assert _run(project, config, "--dtype", "float32") == 0
    from sim_consistency.config import load_models_config
    from sim_consistency.models import create_model

    specs = load_models_config(config)
    loaded = create_model(specs["vit"], specs, device="cpu", location=project)
    data = load_dataset(
        "wds/digits", "test", location=project, max_samples=40, transform=loaded.transform
    )
    images = torch.stack([data[i].image for i in range(len(data))])
    with torch.inference_mode():
        _, inter = loaded.model.forward_intermediates(
            images, output_fmt="NLC", return_prefix_tokens=True
        )
        logits = loaded.model(images)
    n_prefix = loaded.model.num_prefix_tokens
    with open_cache(project.feature_file("wds/digits", "test", "vit")) as cache:
        assert len(inter) == len(cache.block_names)
        for i, name in enumerate(cache.block_names):
            patches, _prefix = inter[i]
            expected = patches.mean(dim=1).numpy()
            np.testing.assert_allclose(cache.block(name), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(cache.logits, logits.numpy(), rtol=1e-5, atol=1e-5)
    assert n_prefix == 1


@pytest.mark.slow
def test_num_workers_keep_keys_and_labels_aligned(project, models_config):
    config = models_config({"cnx": TIMM_MODELS["cnx"]})
    assert _run(project, config, "--num_workers", "2") == 0
    rows = load_dataset("wds/digits", "test", location=project, max_samples=40)
    with open_cache(project.feature_file("wds/digits", "test", "cnx")) as cache:
        assert cache.keys.tolist() == rows.keys
        assert cache.labels.tolist() == rows.labels.tolist()


def test_list_blocks_is_a_dry_run(project, models_config, capsys):
    config = models_config(TIMM_MODELS)
    assert _run(project, config, "--list_blocks") == 0
    out = capsys.readouterr().out
    assert "vit:" in out and "blocks.0" in out and "bytes/image" in out
    assert "projected cache size" in out
    assert not any(project.features.rglob("*.h5"))


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--model_key", "vitt"], "unknown model id(s) 'vitt'; did you mean 'vit'"),
        (["--datasets", "wds/nope"], "wds_nope"),
        (
            ["--datasets", "wds/digits", "--device", "cpu", "--decode_device", "cuda"],
            "--decode_device cuda: the model runs on cpu",
        ),
    ],
)
def test_bad_inputs_exit_nonzero_and_write_nothing(project, models_config, capsys, args, fragment):
    config = models_config({"vit": TIMM_MODELS["vit"]})
    code = feature_extraction.main(
        [
            "--project_root",
            str(project.root),
            "--models_config",
            str(config),
            "--splits",
            "test",
            "--num_workers",
            "0",
            *(["--datasets", "wds/digits"] if "--datasets" not in args else []),
            *args,
        ]
    )
    assert code == 2
    assert fragment in capsys.readouterr().err
    assert not any(project.features.rglob("*.h5*"))


def test_corrupt_shard_names_the_shard(tmp_path, digits_root, models_config, capsys):
    import shutil

    from sim_consistency.project import ProjectLocation

    location = ProjectLocation.resolve(tmp_path / "r").create()
    # A copy under another name: wds/digits itself would be rebuilt by its builder.
    target = location.wds_dataset_dir("corrupt")
    shutil.copytree(digits_root.wds_dataset_dir("digits"), target)
    shard = target / "test" / "0.tar"
    shard.write_bytes(shard.read_bytes()[:5000])
    config = models_config({"vit": TIMM_MODELS["vit"]})
    code = feature_extraction.main(
        [
            "--project_root",
            str(location.root),
            "--models_config",
            str(config),
            "--datasets",
            "wds/corrupt",
            "--splits",
            "test",
            "--num_workers",
            "0",
        ]
    )
    assert code == 2
    assert "test/0.tar" in capsys.readouterr().err
    assert not any(location.features.rglob("*.h5*"))


@pytest.mark.slow
def test_sigkill_leaves_nothing_readable_and_rerun_matches(project, models_config, tmp_path):
    config = models_config({"vit": TIMM_MODELS["vit"]})
    args = [
        "--project_root",
        str(project.root),
        "--models_config",
        str(config),
        "--datasets",
        "wds/digits",
        "--splits",
        "test",
        "--batch_size",
        "4",
        "--num_workers",
        "0",
    ]
    path = project.feature_file("wds/digits", "test", "vit")
    partial = Path(str(path) + ".partial")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "feature_extraction.py"), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not partial.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert partial.exists(), "extraction never started writing"
    time.sleep(0.5)  # mid-extraction: some batches written
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not path.exists()
    with pytest.raises(Exception, match="partial file"):
        open_cache(partial)
    assert feature_extraction.main(args) == 0
    assert not partial.exists()
    resumed = _digest(path)
    clean = tmp_path / "clean"
    clean.mkdir()
    from sim_consistency.project import ProjectLocation

    clean_loc = ProjectLocation.resolve(clean).create()
    os.symlink(
        project.wds_dataset_dir("digits"),
        clean_loc.wds_dataset_dir("digits"),
        target_is_directory=True,
    )
    args_clean = [*args]
    args_clean[1] = str(clean)
    assert feature_extraction.main(args_clean) == 0
    assert _digest(clean_loc.feature_file("wds/digits", "test", "vit")) == resumed
