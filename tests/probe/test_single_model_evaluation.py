"""The single_model_evaluation stage: outputs, idempotence, few-shot keys, head, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from sim_consistency.features import keys_fingerprint, open_cache
from sim_consistency.probe import CLASS_MASK_FILE
from sim_consistency.probe.result_folders import hp_slug
from sim_consistency.project import ProjectLocation
from sim_consistency.stages import single_model_evaluation as stage
from sim_consistency.stages.single_model_evaluation import EvaluationSettings, plan

pytestmark = pytest.mark.slow  # the session's extracted probe project


DATASET = "wds/digits"


def _main(location: ProjectLocation, config: str, *extra: str) -> int:
    return stage.main(
        ["--project_root", str(location.root), "--models_config", config,
         "--datasets", DATASET, "--device", "cpu", *extra]
    )  # fmt: skip


def _result_dir(location: ProjectLocation, model_id: str, slug: str) -> Path:
    return location.linear_probe / "single_model" / "wds_digits" / model_id / slug


def _copy_project(location: ProjectLocation, dest: Path, *, copy_dataset: bool = False):
    """A fresh project with copies of the feature caches (safe to corrupt) and no results."""
    new = ProjectLocation.resolve(dest).create()
    shutil.copytree(location.features, new.features, dirs_exist_ok=True)
    source = Path(os.path.realpath(location.wds_dataset_dir("digits")))
    if copy_dataset:
        shutil.copytree(source, new.wds_dataset_dir("digits"))
    else:
        os.symlink(source, new.wds_dataset_dir("digits"))
    shutil.copy(location.root / "models.json", new.root / "models.json")
    return new, str(new.root / "models.json")


@pytest.fixture(scope="module")
def evaluated(probe_project):
    """The stage run once on every block of both models with two seeds."""
    location, config = probe_project
    assert _main(location, config, "--blocks", "all", "--seeds", "0", "1") == 0
    return location, config


def test_writes_results_json_and_tidy_csv_per_run(evaluated):
    location, _ = evaluated
    for model_id in ("vit", "rn"):
        with open_cache(location.feature_file(DATASET, "train", model_id)) as cache:
            block_names = cache.block_names
        for seed in (0, 1):
            out = _result_dir(location, model_id, hp_slug("fast", seed))
            assert out.name == f"fast_val_0.2_seed_{seed}"
            record = json.loads((out / "results.json").read_text())
            assert record["block_names"] == block_names
            assert record["hyper_parameters"]["seed"] == seed
            last = record["blocks"][block_names[-1]]
            assert {
                "top1",
                "top5",
                "balanced_acc",
                "per_class_recall",
                "weight_decay",
                "lr",
            } <= set(last)
            assert last["lr"] is None and last["protocol"] == "fast"
            assert len(last["val_curve"]) >= 8 and len(last["per_class_recall"]) == 10
            assert last["top1"] > 0.2  # chance is 0.1 on 10 balanced classes
            frame = pd.read_csv(out / "results.csv")
            probes = frame[frame["kind"] == "probe"]
            assert probes["block"].tolist() == block_names  # accuracy vs depth, in order
            assert probes["depth_fraction"].iloc[-1] == 1.0
            assert set(frame["seed"]) == {seed} and set(frame["model_id"]) == {model_id}
            depth = pd.read_csv(out / "accuracy_vs_depth.csv")
            assert depth["top1"].tolist() == pytest.approx(probes["top1"].tolist())


def test_head_accuracy_from_cached_logits(evaluated):
    location, _ = evaluated
    vit = json.loads(
        (_result_dir(location, "vit", hp_slug("fast", 0)) / "results.json").read_text()
    )
    with open_cache(location.feature_file(DATASET, "test", "vit")) as test:
        expected = float(np.mean(test.logits.argmax(1) == test.labels))
    assert vit["head"]["top1"] == pytest.approx(expected)
    frame = pd.read_csv(_result_dir(location, "vit", hp_slug("fast", 0)) / "results.csv")
    assert frame[frame["kind"] == "head"]["top1"].tolist() == pytest.approx([expected])
    rn = json.loads((_result_dir(location, "rn", hp_slug("fast", 0)) / "results.json").read_text())
    assert rn["head"] is None and "no /logits" in rn["head_skipped"]


def test_rerun_skips_up_to_date_results_and_replans_stale_or_forced(evaluated):
    location, config = evaluated
    settings = EvaluationSettings(
        project_root=location.root, model_ids=("vit", "rn"), datasets=(DATASET,),
        blocks=("all",), seeds=(0, 1, 2), device="cpu",
    )  # fmt: skip
    assert [(i.model_id, i.seed, i.reason) for i in plan(settings)] == [
        ("vit", 2, "missing"),
        ("rn", 2, "missing"),
    ]
    path = _result_dir(location, "rn", hp_slug("fast", 1)) / "results.json"
    record = json.loads(path.read_text())
    record["content_key"] = "0" * 64
    path.write_text(json.dumps(record))
    assert ("rn", 1, "stale") in [(i.model_id, i.seed, i.reason) for i in plan(settings)]
    other_blocks = replace(settings, blocks=("last",), seeds=(0,))
    assert {i.reason for i in plan(other_blocks)} == {"stale"}  # the blocks change the numbers
    forced = replace(settings, seeds=(0,), force=True)
    assert {i.reason for i in plan(forced)} == {"forced"}


def test_fewshot_saves_keys_disjoint_from_validation(probe_project):
    location, config = probe_project
    assert _main(location, config, "--model_key", "vit", "--fewshot_k", "3") == 0
    out = _result_dir(location, "vit", hp_slug("fast", 0, fewshot_k=3))
    record = json.loads((out / "results.json").read_text())
    fewshot, val = record["fewshot_keys"], record["validation_keys"]
    with open_cache(location.feature_file(DATASET, "train", "vit")) as train:
        label_of = dict(zip(train.keys.tolist(), train.labels.tolist(), strict=True))
    assert len(fewshot) == 30 and not set(fewshot) & set(val)
    assert np.bincount([label_of[k] for k in fewshot]).tolist() == [3] * 10
    assert record["blocks"][record["block_names"][-1]]["n_train"] == 30


def test_head_uses_class_index_mask_of_the_dataset(probe_project, tmp_path):
    location, _ = probe_project
    new, config = _copy_project(location, tmp_path / "root", copy_dataset=True)
    mask = [3, 1, 4, 0, 5, 9, 2, 6, 8, 7]
    (new.wds_dataset_dir("digits") / CLASS_MASK_FILE).write_text(json.dumps(mask))
    assert _main(new, config, "--model_key", "vit") == 0
    record = json.loads((_result_dir(new, "vit", hp_slug("fast", 0)) / "results.json").read_text())
    with open_cache(new.feature_file(DATASET, "test", "vit")) as test:
        expected = float(np.mean(test.logits[:, mask].argmax(1) == test.labels))
    assert record["head"]["class_mask"] is True
    assert record["head"]["top1"] == pytest.approx(expected)


def _corrupt(path: Path, dataset: str, edit) -> None:
    """Edit a dataset as a writer would have written it (checksums and keys digest updated)."""
    with h5py.File(path, "r+") as f:
        data = f[dataset][()]
        edit(data)
        f[dataset][...] = data
        if dataset == "keys":
            f.attrs["keys_sha256"] = keys_fingerprint([k.decode() for k in data])


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("other_model", "different models"),
        ("unseen_class", "never occur in the training labels"),
        ("one_class", "at least 2"),
        ("nan", "has NaN/inf values"),
        ("overlap", "occur in both train and test"),
    ],
)
def test_bad_inputs_fail_naming_the_file_and_write_nothing(
    probe_project, tmp_path, capsys, case, message
):
    location, _ = probe_project
    new, config = _copy_project(location, tmp_path / "root")
    train = new.feature_file(DATASET, "train", "vit")
    test = new.feature_file(DATASET, "test", "vit")
    if case == "other_model":
        shutil.copy(new.feature_file(DATASET, "test", "rn"), test)
    elif case == "unseen_class":
        _corrupt(train, "labels", lambda y: y.__setitem__(y == 7, 6))
    elif case == "one_class":
        _corrupt(train, "labels", lambda y: y.fill(2))
    elif case == "nan":
        with open_cache(train) as cache:
            block = f"blocks/{cache.block_names[-1]}"
        _corrupt(train, block, lambda X: X.__setitem__((5, 0), np.nan))
    elif case == "overlap":
        with open_cache(train) as cache:
            first = cache.keys[0]
        _corrupt(test, "keys", lambda k: k.__setitem__(0, first.encode()))
    capsys.readouterr()
    assert _main(new, config, "--model_key", "vit") == 2
    err = capsys.readouterr().err
    assert message in err and str(train if case != "overlap" else test) in err
    assert not list(new.linear_probe.rglob("*.json")) and not list(new.linear_probe.rglob("*.csv"))


def test_script_runs_as_subprocess(probe_project, tmp_path):
    location, _ = probe_project
    new, config = _copy_project(location, tmp_path / "root")
    script = Path(__file__).parents[2] / "scripts" / "single_model_evaluation.py"
    done = subprocess.run(
        [sys.executable, str(script), "--project_root", str(new.root), "--models_config", config,
         "--model_key", "rn", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (_result_dir(new, "rn", hp_slug("fast", 0)) / "results.json").is_file()


def test_metadata_edit_relabels_tables_without_recomputing(probe_project, tmp_path):
    location, config = _copy_project(probe_project[0], tmp_path / "meta")
    assert _main(location, config, "--seeds", "0") == 0
    out = _result_dir(location, "vit", hp_slug("fast", 0))
    before = json.loads((out / "results.json").read_text())
    entries = json.loads(Path(config).read_text())
    entries["vit"]["metadata"] = {"role": "finetuned", "run_group": "g1"}
    Path(config).write_text(json.dumps(entries))
    specs_settings = stage.STAGE.parse(
        ["--project_root", str(location.root), "--models_config", config,
         "--datasets", DATASET, "--seeds", "0"],
    )  # fmt: skip
    assert [(i.model_id, i.reason) for i in plan(specs_settings)] == [("vit", "metadata")]
    assert _main(location, config, "--seeds", "0") == 0
    after = json.loads((out / "results.json").read_text())
    assert after["metadata"] == {"role": "finetuned", "run_group": "g1"}
    assert after["blocks"] == before["blocks"] and after["content_key"] == before["content_key"]
    frame = pd.read_csv(out / "results.csv")
    assert set(frame["meta_role"]) == {"finetuned"} and set(frame["meta_run_group"]) == {"g1"}
    assert plan(specs_settings) == []  # refreshed: nothing left to do


def test_wilson_intervals_and_per_row_predictions_match_the_accuracies(evaluated):
    from scipy.stats import binomtest

    from sim_consistency.probe.stored import read_predictions

    location, _ = evaluated
    out = _result_dir(location, "vit", hp_slug("fast", 0))
    record = json.loads((out / "results.json").read_text())
    predictions = read_predictions(out / "test_predictions.npz")
    labels = predictions.labels
    with open_cache(location.feature_file(DATASET, "test", "vit")) as test:
        assert predictions.keys.tolist() == [str(k) for k in test.keys]
        assert labels.tolist() == test.labels.tolist()
    assert list(predictions.block_predictions) == record["block_names"]
    # the logits are the deepest block's, and their argmax is that block's prediction
    assert predictions.block == record["block_names"][-1]
    np.testing.assert_array_equal(
        predictions.pred, predictions.block_predictions[predictions.block]
    )
    frame = pd.read_csv(out / "results.csv").set_index("block")
    scored = [(name, predictions.block_predictions[name], record["blocks"][name])
              for name in record["block_names"]]  # fmt: skip
    assert predictions.head_pred is not None
    scored.append(("logits", predictions.head_pred, record["head"]))
    for name, pred, metrics in scored:
        n = labels.size
        k = int((pred == labels).sum())
        assert k / n == metrics["top1"]  # the stored predictions are the scored ones
        low, high = metrics["top1_ci_low"], metrics["top1_ci_high"]
        assert 0 <= low < metrics["top1"] < high <= 1
        # Wilson's interval: a little narrower than Clopper-Pearson's exact interval here
        exact = binomtest(k, n).proportion_ci(0.95, method="exact")
        wilson = binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert (low, high) == pytest.approx((wilson.low, wilson.high), abs=1e-12)
        assert exact.low - 0.01 < low and high < exact.high + 0.01
        assert frame.loc[name, "top1_ci_low"] == pytest.approx(low, abs=1e-15)


def test_results_without_predictions_are_rebuilt_with_the_same_numbers(evaluated):
    location, config = evaluated
    out = _result_dir(location, "rn", hp_slug("fast", 0))
    before = json.loads((out / "results.json").read_text())
    (out / "test_predictions.npz").unlink()
    settings = EvaluationSettings(
        project_root=location.root, model_ids=("rn",), datasets=(DATASET,),
        blocks=("all",), seeds=(0,), device="cpu",
    )  # fmt: skip
    items = [i for i in plan(settings) if i.model_id == "rn" and i.seed == 0]
    assert [i.reason for i in items] == ["missing"]
    assert _main(location, config, "--blocks", "all", "--seeds", "0", "--model_key", "rn") == 0
    after = json.loads((out / "results.json").read_text())
    assert (out / "test_predictions.npz").is_file()
    assert after["content_key"] == before["content_key"]
    for name, metrics in before["blocks"].items():
        assert after["blocks"][name]["top1"] == metrics["top1"]
