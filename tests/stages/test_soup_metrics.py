"""Soup-metrics stage end to end on digits with real timm ResNets (BatchNorm) saved as checkpoints."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from sim_consistency.errors import MissingInputError
from sim_consistency.features import open_cache
from sim_consistency.probe import head_accuracy, linear_probe
from sim_consistency.similarity import cka
from sim_consistency.stages import (
    build_variants,
    feature_extraction,
    layer_cka,
    single_model_evaluation,
    soup_metrics,
)

# A module-wide study (~2 min of set-up idle, past 10 min on a loaded 2-core machine).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _checkpoint(path, seed: int, perturb_from=None):
    torch.manual_seed(seed)
    state = timm.create_model("test_resnet", pretrained=False, num_classes=10).state_dict()
    if perturb_from is not None:  # a "fine-tuned" copy close to another checkpoint
        base = perturb_from
        state = {
            k: (v + 0.05 * torch.randn_like(v)) if v.dtype.is_floating_point else v
            for k, v in base.items()
        }
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return state


@pytest.fixture(scope="module")
def study(tmp_path_factory, digits_root):
    import os

    from sim_consistency.project import ProjectLocation

    tmp = tmp_path_factory.mktemp("soups")
    location = ProjectLocation.resolve(tmp / "root").create()
    os.symlink(digits_root.wds_dataset_dir("digits"), location.wds_dataset_dir("digits"))
    base = _checkpoint(tmp / "w0.safetensors", 0)
    _checkpoint(tmp / "ft1.safetensors", 1, perturb_from=base)
    _checkpoint(tmp / "ft2.safetensors", 2, perturb_from=base)
    arch = {
        "source": "timm",
        "model_name": "test_resnet",
        "pretrained": False,
        "num_classes": 10,
        "img_size": 16,
    }

    def ckpt(name, **metadata):
        return {
            "source": "checkpoint",
            "arch": "arch",
            "path": str(tmp / name),
            "metadata": metadata,
        }

    config = {
        "arch": arch,
        "w0": ckpt("w0.safetensors", role="pretrained"),
        "ft1": ckpt("ft1.safetensors", branch_epoch=1, analysis_epoch=2),
        "ft1_copy": ckpt("ft1.safetensors", branch_epoch=1, analysis_epoch=2),
        "ft2": ckpt("ft2.safetensors", branch_epoch=0, analysis_epoch=2),
        "w0_copy": ckpt("w0.safetensors", branch_epoch=0, analysis_epoch=2),
        "soup_same": {
            "variant": {
                "method": "uniform",
                "ingredients": ["ft1", "ft1_copy"],
                "bn_policy": "average",
            },
        },
        "soup_ft": {
            "variant": {"method": "uniform", "ingredients": ["ft1", "ft2"], "bn_policy": "average"},
        },
        "mono": {
            "variant": {"method": "monosoup", "base": "w0", "finetuned": "ft1"},
        },
    }
    config_path = tmp / "models.json"
    config_path.write_text(json.dumps(config))
    generated = location.models / "generated" / "soups.json"
    root = ["--project_root", str(location.root)]
    models = [*root, "--models_config", str(generated)]
    data = ["--datasets", "wds/digits", "--device", "cpu"]
    pairs = ["--interpolate", "ft1:ft1_copy", "--barrier_models", "w0", "ft1", "--n_alphas", "3"]
    # the soup study's pipeline: generate + build, extract, probe, layer CKA, soup metrics
    build = [*root, "--models_config", str(config_path), "--generate", str(generated), *pairs]
    assert build_variants.main([*build, "--bn_policy", "average", "--device", "cpu"]) == 0
    points = [m for m in json.loads(generated.read_text()) if m.startswith("interp__")]
    probed = [m for m in json.loads(generated.read_text()) if m not in points and m != "arch"]
    extract = [*models, *data, "--max_samples", "100", "--model_key"]
    assert feature_extraction.main([*extract, *probed]) == 0
    assert feature_extraction.main([*extract, *points, "--splits", "test"]) == 0  # logits only
    assert single_model_evaluation.main([*models, *data, "--model_key", *probed]) == 0
    cka_models = ["soup_same", "soup_ft", "ft1", "ft1_copy", "ft2", "w0"]
    cka_argv = ["--model_key", *cka_models, "--reference", "soup_same", "--pairs", "all"]
    assert layer_cka.main([*models, *data[:2], *cka_argv, "--no-normalize"]) == 0
    argv = [
        *models,
        *data[:2],
        *pairs,
        "--retention_ks",
        "4",
        "96",
        "--purity_models",
        "ft1",
        "soup_ft",
    ]
    assert soup_metrics.main(argv) == 0
    return location, generated, argv


def _csv(location, name):
    return pd.read_csv(location.soup_metrics / name)


def test_identical_ingredients_give_zero_distance_and_improvement(study):
    location, _, _ = study
    table = _csv(location, "soup_vs_ingredients.csv").set_index("soup_id")
    assert table.loc["soup_same", "improvement_over_mean"] == 0.0
    assert table.loc["soup_same", "improvement_over_best"] == 0.0
    # identical predictions: a zero-width interval, no discordant image, no verdict
    same = table.loc["soup_same"]
    assert (same["over_best_ci_low"], same["over_best_ci_high"]) == (0.0, 0.0)
    assert (same["mcnemar_soup_only"], same["mcnemar_best_only"], same["mcnemar_p"]) == (0, 0, 1)
    assert same["over_best_verdict"] == same["over_mean_verdict"] == "inconclusive"
    ft = table.loc["soup_ft"]
    assert ft["over_best_ci_low"] <= ft["improvement_over_best"] <= ft["over_best_ci_high"]
    assert ft["over_mean_ci_low"] <= ft["improvement_over_mean"] <= ft["over_mean_ci_high"]
    assert ft["over_best_verdict"] in ("supported", "not supported", "inconclusive")
    assert 0 < ft["mcnemar_p"] <= 1 and ft["n_bootstrap"] == 10_000
    records = json.loads((location.soup_metrics / "soup_vs_ingredients.json").read_text())
    assert {"over_best_ci_low", "mcnemar_p", "over_mean_verdict"} <= set(records[0])
    pairs = _csv(location, "weight_pairs.csv")
    same = pairs[
        (pairs["kind"] == "weights")
        & (pairs[["model_a", "model_b"]].isin(["ft1", "ft1_copy", "soup_same"]).all(axis=1))
    ]
    assert len(same) == 3 and (same["l2_distance"] == 0.0).all()
    far = pairs.query("kind == 'weights' and model_a == 'ft1' and model_b == 'ft2'")[
        "l2_distance"
    ].iloc[0]
    assert far > 0
    # task vectors are relative to the declared pretrained base
    assert "task_vector" in set(pairs["kind"]) and "w0" not in set(
        pairs.query("kind == 'task_vector'")[["model_a", "model_b"]].stack()
    )


def test_identical_endpoints_have_zero_barrier(study):
    location, _, _ = study
    barriers = _csv(location, "barriers.csv")
    same = barriers[(barriers["model_a"] == "ft1") & (barriers["model_b"] == "ft1_copy")]
    assert len(same) == 2  # error and loss
    assert same["barrier"].abs().max() <= 1e-6 and same["barrier_midpoint"].abs().max() <= 1e-6
    curves = _csv(location, "interpolation_curves.csv")
    assert sorted(curves["alpha"].unique()) == [0.0, 0.5, 1.0]
    matrix = pd.read_csv(location.soup_metrics / "barrier_matrix_error_wds_digits.csv", index_col=0)
    assert list(matrix.index) == ["w0", "ft1"] and np.allclose(
        matrix.to_numpy(), matrix.to_numpy().T
    )
    for stem in ("interpolation_error", "interpolation_loss"):
        assert (location.soup_metrics / f"{stem}.png").stat().st_size > 0
        assert (location.soup_metrics / f"{stem}.pdf").stat().st_size > 0


def test_reported_accuracy_equals_head_accuracy(study):
    location, _, _ = study
    accuracy = _csv(location, "accuracy.csv").set_index("model_id")
    with open_cache(location.feature_file("wds/digits", "test", "soup_ft")) as cache:
        direct = head_accuracy(cache.logits, cache.labels)
    assert accuracy.loc["soup_ft", "top1"] == pytest.approx(direct["top1"], abs=1e-12)
    assert accuracy.loc["soup_ft", "source"] == "head"


def test_block_cka_and_monosoup_tables(study):
    location, _, _ = study
    cka = _csv(location, "block_cka.csv")
    same = cka[(cka["soup_id"] == "soup_same") & (cka["reference"] == "ft1")]
    assert len(same) >= 2 and np.allclose(same["cka"], 1.0, atol=1e-6)
    assert set(cka["role"]) == {"ingredient", "base"}
    layers = _csv(location, "monosoup_layers.csv")
    assert set(layers["model_id"]) == {"mono"} and layers["edited"].any()
    assert (location.soup_metrics / "monosoup_layers_mono.png").is_file()


def test_branching_outputs(study):
    location, _, _ = study
    soups = _csv(location, "branching_soup_results.csv")
    assert sorted(soups["branch_epoch"]) == [0, 1] and (soups["n_models"] == 2).all()
    same = soups.set_index("branch_epoch").loc[1]  # ft1 and its copy: the soup is ft1
    assert (same["over_mean_ci_low"], same["over_mean_ci_high"]) == (0.0, 0.0)
    assert same["over_mean_verdict"] == "inconclusive"
    summary = json.loads((location.soup_metrics / "branching_summary.json").read_text())["all"]
    assert summary["early_epochs"] == [0] and summary["late_epochs"] == [1]
    assert summary["ci_low"] <= summary["difference"] <= summary["ci_high"]
    assert summary["verdict"] in ("supported", "not supported", "inconclusive")
    assert summary["n_bootstrap"] == 10_000 and "paired bootstrap" in summary["statement"]
    pairs = _csv(location, "branching_pairwise_distances.csv").set_index("branch_epoch")
    assert pairs.loc[1, "l2_distance"] == 0.0  # ft1 and its copy
    for stem in ("distance_vs_branching", "soup_performance_vs_branching", "soup_vs_distance"):
        assert (location.soup_metrics / f"{stem}.pdf").is_file()


def test_purity_sweep_endpoint_equals_full_probe(study):
    location, _, _ = study
    sweep = _csv(location, "retention_sweep.csv")
    row = sweep[(sweep["model_id"] == "ft1") & (sweep["k"] == 96)]
    assert set(row["purity"]) == {"high", "low"}
    with (
        open_cache(location.feature_file("wds/digits", "train", "ft1")) as train,
        open_cache(location.feature_file("wds/digits", "test", "ft1")) as test,
    ):
        block = train.block_names[-1]
        assert train.block(block).shape[1] == 96  # the sweep kept every dimension
        full = linear_probe(
            train.block(block, dtype=np.float64),
            train.labels,
            test.block(block, dtype=np.float64),
            test.labels,
            protocol="fast",
            seed=0,
        )
    assert np.allclose(row["top1"], full["top1"])
    purity = _csv(location, "purity.csv")
    assert {"silhouette", "feature_mean_abs_cos"} <= set(purity.columns)
    summary = json.loads((location.soup_metrics / "summary.json").read_text())
    assert "biased HSIC" in summary["estimators"]["block_cka"]


def test_rerun_is_idempotent_and_bad_soup_is_named(study, capsys):
    location, config_path, argv = study
    summary = location.soup_metrics / "summary.json"
    stamp = summary.stat().st_mtime_ns
    assert soup_metrics.main(argv) == 0  # unchanged inputs: every result is reused
    assert summary.stat().st_mtime_ns == stamp
    before = (location.soup_metrics / "accuracy.csv").read_text()
    assert soup_metrics.main([*argv, "--parts", "accuracy"]) == 0
    assert (location.soup_metrics / "accuracy.csv").read_text() == before
    assert soup_metrics.main([*argv[:4], "--soup", "ft1", "--parts", "accuracy"]) == 2
    assert "--soup 'ft1': not a soup" in capsys.readouterr().err


def test_metadata_only_edit_relabels_without_recomputing(study, tmp_path):
    """Metadata that only labels models (here: a new ``notes`` field and a ``run_group`` on a
    model outside the branched runs) refreshes ``summary.json``; no table is rewritten. An
    edit the numbers depend on (the branched runs' ``run_group``) recomputes."""
    location, config_path, argv = study
    edited_path = tmp_path / "models.json"
    config = json.loads(config_path.read_text())
    config["ft2"]["metadata"]["notes"] = "relabelled"
    config["w0"]["metadata"]["run_group"] = "resnets"  # w0 declares no branch epochs
    edited_path.write_text(json.dumps(config))
    assert soup_metrics.main([*argv, "--parts", "accuracy"]) == 0  # up to date (cheap part)
    args = [*argv[:2], "--models_config", str(edited_path), *argv[4:], "--parts", "accuracy"]
    out = location.soup_metrics
    tables = {p.name: p.stat().st_mtime_ns for p in out.glob("*.csv")}
    assert soup_metrics.main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reason"] == "metadata"
    assert summary["model_metadata"]["ft2"]["notes"] == "relabelled"
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.csv")} == tables
    assert soup_metrics.main(args) == 0  # now up to date: nothing written
    assert json.loads((out / "summary.json").read_text()) == summary

    settings = soup_metrics.STAGE.parse(args)
    config["ft1"]["metadata"]["run_group"] = "other"  # splits the branched runs: other soups
    edited_path.write_text(json.dumps(config))
    with pytest.raises(MissingInputError, match="generated branching soups") as error:
        soup_metrics.plan(replace(settings, parts=soup_metrics.PARTS))
    assert "scripts/build_variants.py" in str(error.value) and "--generate" in str(error.value)


def test_block_cka_equals_the_direct_estimator(study):
    """The grids of ``layer_cka --no-normalize`` give the CKA the stage used to compute itself
    (biased linear CKA of the cached features, float64)."""
    location, _, _ = study
    table = _csv(location, "block_cka.csv")
    assert len(table) == 2 * 3 * len(table["block"].unique())  # 2 soups × 3 references
    for row in table.itertuples(index=False):
        with (
            open_cache(location.feature_file("wds/digits", "test", row.soup_id)) as a,
            open_cache(location.feature_file("wds/digits", "test", row.reference)) as b,
        ):
            direct = cka(a.block(row.block), b.block(row.block), unbiased=False)
        assert row.cka == pytest.approx(direct, abs=1e-10)


def test_missing_upstream_inputs_name_the_command(study, capsys):
    """Nothing upstream is recomputed: each missing input is named with the command that
    produces it, for every requested part at once (exit 2)."""
    location, generated, argv = study
    user_config = location.root.parent / "models.json"
    plain = [*argv[:2], "--models_config", str(user_config), *argv[4:]]
    assert soup_metrics.main([*plain, "--parts", "barriers", "branching"]) == 2
    err = capsys.readouterr().err
    assert "generated interpolation variants of ft1:ft1_copy, w0:ft1" in err
    assert "generated branching soups" in err
    assert f"scripts/build_variants.py --project_root {location.root}" in err
    assert "--generate" in err and "--interpolate ft1:ft1_copy --barrier_models w0 ft1" in err
    assert soup_metrics.main([*argv, "--parts", "accuracy", "--probe_seed", "7"]) == 2
    err = capsys.readouterr().err
    assert "scripts/single_model_evaluation.py" in err and "--seeds 7" in err
    assert soup_metrics.main([*argv, "--parts", "cka", "--split", "train"]) == 2
    err = capsys.readouterr().err
    assert "scripts/layer_cka.py" in err and "--pairs all --split train" in err
    assert not list(location.soup_metrics.glob("*.partial"))


def test_unrelated_extraction_keeps_results(study):
    """Extracting a model no part reads (a new cache of the same dataset) recomputes nothing."""
    location, generated, argv = study
    assert soup_metrics.main(argv) == 0  # current (an earlier test relabelled the summary)
    summary = location.soup_metrics / "summary.json"
    stamp = summary.stat().st_mtime_ns
    cache = location.feature_file("wds/digits", "test", "arch")
    assert not cache.exists()
    extract = [*argv[:4], "--datasets", "wds/digits", "--model_key", "arch", "--device", "cpu"]
    assert feature_extraction.main([*extract, "--max_samples", "50", "--splits", "test"]) == 0
    assert cache.is_file()
    assert soup_metrics.main(argv) == 0
    assert summary.stat().st_mtime_ns == stamp


def test_checkpoint_content_change_recomputes(study):
    """A checkpoint whose bytes change, with its size and modification time kept, is a new
    input: the parts that read its weights are recomputed."""
    location, _, argv = study
    path = location.root.parent / "w0.safetensors"
    original, stat = path.read_bytes(), path.stat()
    weights = location.soup_metrics / "weight_pairs.csv"
    before = weights.read_text()
    state = load_file(str(path))
    name = next(k for k, v in state.items() if v.dtype.is_floating_point and v.ndim == 4)
    state[name] = state[name] + 1.0
    try:
        save_file(state, str(path))
        assert path.stat().st_size == stat.st_size
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert soup_metrics.main([*argv, "--parts", "weights"]) == 0
        summary = json.loads((location.soup_metrics / "summary.json").read_text())
        assert summary["reason"] == {"weights": "stale"}
        assert weights.read_text() != before
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert soup_metrics.main([*argv, "--parts", "weights"]) == 0
    assert weights.read_text() == before
