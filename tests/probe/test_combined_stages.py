"""Stored probes, combined/ensemble probes and probe transfer on real digits features.

Constructed cases with known answers: a model concatenated with itself probes like the model,
an ensemble of identical members predicts like the member, an identity transfer map gives the
single model's accuracy and a permuting map the permuted accuracy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sim_consistency.features import open_cache
from sim_consistency.probe.stored import read_predictions, read_probe_weights, softmax
from sim_consistency.project import ProjectLocation
from sim_consistency.stages import combined_probe, probe_transfer, single_model_evaluation

pytestmark = pytest.mark.slow  # the session's extracted probe project

DATASET = "wds/digits"
SLUG = "fast_val_0.2_seed_0"


@pytest.fixture(scope="module")
def project(probe_project, tmp_path_factory):
    """A copy of the probe project's features with single-model probes of both models."""
    location, _ = probe_project
    new = ProjectLocation.resolve(tmp_path_factory.mktemp("combined") / "root").create()
    shutil.copytree(location.features, new.features, dirs_exist_ok=True)
    config = new.root / "models.json"
    shutil.copy(location.root / "models.json", config)
    code = single_model_evaluation.main(
        ["--project_root", str(new.root), "--models_config", str(config), "--datasets",
         DATASET, "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    sets = new.root / "sets.json"
    sets.write_text(json.dumps({"model_sets": {"self": ["rn", "rn"], "pair": ["rn", "vit"],
                                               "one": ["rn"]}}))  # fmt: skip
    return new, str(config), str(sets)


def _single(location: ProjectLocation, model_id: str) -> Path:
    return location.linear_probe / "single_model" / "wds_digits" / model_id / SLUG


def _combined(location: ProjectLocation, combiner: str, name: str) -> Path:
    return location.linear_probe / "combined" / combiner / "wds_digits" / name / SLUG


def _run_combined(project, *extra: str) -> int:
    location, config, sets = project
    return combined_probe.main(
        ["--project_root", str(location.root), "--models_config", config, "--model_sets", sets,
         "--datasets", DATASET, "--device", "cpu", *extra]
    )  # fmt: skip


def test_single_model_run_stores_weights_and_predictions_that_reproduce_its_result(project):
    location, _, _ = project
    for model_id in ("rn", "vit"):
        out = _single(location, model_id)
        record = json.loads((out / "results.json").read_text())
        block = record["block_names"][-1]
        assert record["stored_files"]["test_predictions.npz"]["block"] == block
        pred = read_predictions(out / "test_predictions.npz")
        assert pred.top1() == pytest.approx(record["blocks"][block]["top1"], abs=1e-12)
        with open_cache(location.feature_file(DATASET, "test", model_id)) as cache:
            np.testing.assert_array_equal(pred.keys, cache.keys)
            np.testing.assert_array_equal(pred.labels, cache.labels)
            X = cache.block(block)
        probe = read_probe_weights(out / "probe_weights.safetensors")[block]
        np.testing.assert_allclose(probe.scores(X), pred.logits, atol=1e-4)
        np.testing.assert_array_equal(pred.pred, pred.classes[pred.logits.argmax(1)])


def test_reused_when_current_and_rebuilt_when_the_stored_files_are_missing(project):
    location, config, _ = project
    argv = ["--project_root", str(location.root), "--models_config", config, "--datasets",
            DATASET, "--device", "cpu", "--model_key", "rn"]  # fmt: skip
    settings = single_model_evaluation.EvaluationSettings(
        project_root=location.root, models_config=Path(config), datasets=(DATASET,),
        model_ids=("rn",), device="cpu",
    ).validated()  # fmt: skip
    assert single_model_evaluation.plan(settings) == []
    (_single(location, "rn") / "test_predictions.npz").unlink()
    assert [i.reason for i in single_model_evaluation.plan(settings)] == ["missing"]
    assert single_model_evaluation.main(argv) == 0
    assert (_single(location, "rn") / "test_predictions.npz").is_file()


def test_concat_of_a_model_with_itself_gives_the_single_models_accuracy(project):
    location, _, _ = project
    assert _run_combined(project, "--combiners", "concat") == 0
    single = read_predictions(_single(location, "rn") / "test_predictions.npz")
    record = json.loads((_combined(location, "concat", "self") / "results.json").read_text())
    combined = read_predictions(_combined(location, "concat", "self") / "test_predictions.npz")
    single_record = json.loads((_single(location, "rn") / "results.json").read_text())
    single_block = single_record["blocks"][single_record["block_names"][-1]]
    n = single.keys.size
    # Same problem (see sim_consistency.probe.combine): same λ chosen, same predictions up to
    # the solver's tolerance (at most one test row of 200 flips).
    assert record["result"]["weight_decay"] == single_block["weight_decay"]
    assert np.sum(combined.pred != single.pred) <= 1
    assert abs(record["result"]["top1"] - single.top1()) <= 1 / n + 1e-12
    assert record["combiner_settings"]["d_concat"] == 2 * probe_dim(location)
    pair = json.loads((_combined(location, "concat", "pair") / "results.json").read_text())
    assert pair["model_ids"] == ["rn", "vit"] and 0.0 < pair["result"]["top1"] <= 1.0
    weights = read_probe_weights(
        _combined(location, "concat", "pair") / "probe_weights.safetensors"
    )
    assert weights["combined"].weight.shape[1] == pair["combiner_settings"]["d_concat"]


def probe_dim(location: ProjectLocation) -> int:
    with open_cache(location.feature_file(DATASET, "train", "rn")) as cache:
        return int(cache.block(cache.block_names[-1]).shape[1])


def test_concat_pca_of_a_model_with_itself_equals_its_own_pca_probe(project):
    location, _, _ = project
    assert _run_combined(project, "--combiners", "concat_pca") == 0
    one = json.loads((_combined(location, "concat_pca", "one") / "results.json").read_text())
    double = json.loads((_combined(location, "concat_pca", "self") / "results.json").read_text())
    assert one["combiner_settings"]["n_components"] == double["combiner_settings"]["n_components"]
    assert 1 <= one["combiner_settings"]["n_components"] <= probe_dim(location)
    assert one["combiner_settings"]["pca_variance"] == 0.99
    assert abs(one["result"]["top1"] - double["result"]["top1"]) <= 1 / 200 + 1e-12


def test_pair_table_joins_each_pair_with_its_members_and_feeds_the_gap_analysis(project):
    import pandas as pd

    from sim_consistency.analysis import combined_gap
    from sim_consistency.similarity.matrix_files import read_similarity_matrix
    from sim_consistency.stages import analyses, distance_matrix_computation

    location, config, _ = project
    table = pd.read_csv(location.linear_probe / "combined" / "combined_vs_single.csv")
    # the concat and concat_pca runs above, pairs only (the one-model set is left out)
    assert set(zip(table["combiner"], table["model_set"], strict=True)) == {
        ("concat", "self"), ("concat", "pair"), ("concat_pca", "self"), ("concat_pca", "pair"),
    }  # fmt: skip
    single = {
        m: json.loads((_single(location, m) / "results.json").read_text()) for m in ("rn", "vit")
    }
    for row in table.itertuples():
        record = json.loads(
            (_combined(location, row.combiner, row.model_set) / "results.json").read_text()
        )
        assert row.combined_top1 == record["result"]["top1"]
        for model_id, top1, block in ((row.model_a, row.top1_a, row.block_a),
                                      (row.model_b, row.top1_b, row.block_b)):  # fmt: skip
            assert top1 == single[model_id]["blocks"][block]["top1"]
    # the gap analysis reads it (the analyses stage's default --combined_probes)
    metrics = location.root / "metrics.json"
    metrics.write_text(json.dumps([{"sim_method": "cka", "sim_kernel": "linear"}]))
    assert distance_matrix_computation.main(
        ["--project_root", str(location.root), "--models_config", config,
         "--datasets", DATASET, "--similarity_config", str(metrics)]
    ) == 0  # fmt: skip
    assert analyses.default_combined_probes(location) == (
        location.linear_probe / "combined" / "combined_vs_single.csv"
    )
    matrix = read_similarity_matrix(location.similarity_dir(DATASET, "cka_kernel_linear_unbiased"))
    read = combined_gap.read_combined_probes(analyses.default_combined_probes(location))
    gap = combined_gap.gap_vs_similarity(read, {DATASET: matrix})
    assert len(gap) == 4
    pair = gap[(gap["combiner"] == "concat") & (gap["model_b"] == "vit")].iloc[0]
    assert pair["gap"] == pytest.approx(
        pair["combined_top1"] - max(pair["top1_a"], pair["top1_b"]), abs=1e-15
    )
    self_row = gap[(gap["combiner"] == "concat") & (gap["model_b"] == "rn")].iloc[0]
    assert self_row["similarity"] == pytest.approx(1.0, abs=1e-12)  # a model with itself


def test_ensemble_of_identical_members_equals_the_member_and_a_pair_averages_softmax(project):
    location, _, _ = project
    assert _run_combined(project, "--combiners", "ensemble") == 0
    single = read_predictions(_single(location, "rn") / "test_predictions.npz")
    same = read_predictions(_combined(location, "ensemble", "self") / "test_predictions.npz")
    np.testing.assert_array_equal(same.pred, single.pred)
    record = json.loads((_combined(location, "ensemble", "self") / "results.json").read_text())
    assert record["result"]["top1"] == single.top1()
    vit = read_predictions(_single(location, "vit") / "test_predictions.npz")
    mean = (softmax(single.logits) + softmax(vit.logits)) / 2
    pair = read_predictions(_combined(location, "ensemble", "pair") / "test_predictions.npz")
    np.testing.assert_array_equal(pair.pred, single.classes[mean.argmax(1)])
    np.testing.assert_allclose(softmax(pair.logits), mean, atol=1e-6)
    # Reused when current.
    assert _run_combined(project, "--combiners", "ensemble") == 0


def test_ensemble_without_single_model_results_names_the_command(project, tmp_path, capsys):
    location, config, sets = project
    empty = ProjectLocation.resolve(tmp_path / "root").create()
    code = combined_probe.main(
        ["--project_root", str(empty.root), "--models_config", config, "--model_sets", sets,
         "--datasets", DATASET, "--combiners", "ensemble"]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "no single-model probe result" in err and "simc evaluate" in err
    assert "Traceback" not in err


def test_unknown_model_in_a_set_is_refused_before_any_work(project, tmp_path, capsys):
    location, config, _ = project
    bad = tmp_path / "sets.json"
    bad.write_text(json.dumps([["rn", "vitt"]]))
    code = combined_probe.main(
        ["--project_root", str(location.root), "--models_config", config, "--model_sets",
         str(bad), "--datasets", DATASET]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown model id 'vitt'" in err and "did you mean 'vit'" in err


def test_rep2rep_profile_sets_protocol_search_and_seeds_and_the_folders_follow(project, tmp_path):
    from sim_consistency.probe.result_folders import hp_slug

    location, config, sets = project
    identity = tmp_path / "identity.json"
    identity.write_text(json.dumps(list(range(10))))
    common = dict(project_root=location.root, models_config=Path(config), datasets=(DATASET,))
    s = combined_probe.CombinedSettings(**common, model_sets=Path(sets), profile="rep2rep")
    s = s.validated()
    assert (s.protocol, s.search, s.seeds) == ("rep2rep", "rep2rep", (0, 1, 2))
    # the folder single_model_evaluation --profile rep2rep writes for the same seed
    single = single_model_evaluation.EvaluationSettings(
        **common, profile="rep2rep"
    ).validated()  # fmt: skip
    assert s.slug(1) == hp_slug(
        single.protocol, 1, val_proportion=single.val_proportion, search=single.search
    ) == "rep2rep_val_0.2_search_rep2rep_seed_1"  # fmt: skip
    # an explicit flag wins over the profile; without a profile our defaults
    explicit = combined_probe.CombinedSettings(
        **common, model_sets=Path(sets), profile="rep2rep", protocol="fast"
    ).validated()  # fmt: skip
    assert (explicit.protocol, explicit.search) == ("fast", "rep2rep")
    ours = combined_probe.CombinedSettings(**common, model_sets=Path(sets)).validated()
    assert (ours.protocol, ours.search, ours.seeds, ours.slug(0)) == ("fast", "simc", (0,), SLUG)
    transfer = probe_transfer.TransferSettings(
        **{k: v for k, v in common.items() if k != "datasets"}, source_dataset=DATASET,
        target_datasets=(DATASET,), profile="rep2rep", class_maps=(f"{DATASET}={identity}",),
    ).validated()  # fmt: skip
    assert transfer.slug(0) == "rep2rep_val_0.2_search_rep2rep_seed_0"


def _run_transfer(project, *extra: str) -> int:
    location, config, _ = project
    return probe_transfer.main(
        ["--project_root", str(location.root), "--models_config", config, "--source_dataset",
         DATASET, "--target_datasets", DATASET, "--device", "cpu", "--model_key", "rn", *extra]
    )  # fmt: skip


def _transfer_dir(location: ProjectLocation) -> Path:
    return location.linear_probe / "transfer" / "wds_digits" / "wds_digits" / "rn" / SLUG


def test_transfer_identity_map_gives_the_single_accuracy_and_a_permutation_the_permuted(
    project, tmp_path
):
    location, _, _ = project
    identity = tmp_path / "identity.json"
    identity.write_text(json.dumps(list(range(10))))
    assert _run_transfer(project, "--class_map", f"{DATASET}={identity}") == 0
    single = read_predictions(_single(location, "rn") / "test_predictions.npz")
    record = json.loads((_transfer_dir(location) / "results.json").read_text())
    assert record["top1"] == pytest.approx(single.top1(), abs=1 / 200 + 1e-12)
    assert record["n_target_classes"] == 10 and record["class_map"] == str(identity)
    # Target label j is source label perm[j]: a source prediction p becomes perm⁻¹(p).
    perm = np.random.default_rng(3).permutation(10)
    inverse = np.argsort(perm)
    permuted = tmp_path / "perm.json"
    permuted.write_text(json.dumps({"map": perm.tolist()}))
    assert _run_transfer(project, "--class_map", f"{DATASET}={permuted}") == 0
    record = json.loads((_transfer_dir(location) / "results.json").read_text())
    out = read_predictions(_transfer_dir(location) / "test_predictions.npz")
    probe = read_probe_weights(_single(location, "rn") / "probe_weights.safetensors")
    with open_cache(location.feature_file(DATASET, "test", "rn")) as cache:
        source_pred = probe[single.block].scores(cache.block(single.block)).argmax(1)
        labels = cache.labels
    np.testing.assert_array_equal(out.pred, inverse[source_pred])
    assert record["top1"] == float(np.mean(inverse[source_pred] == labels))
    assert record["top1"] < single.top1()  # a wrong map is visibly wrong


def test_transfer_errors_name_the_dataset_and_the_fix(project, tmp_path, capsys):
    assert _run_transfer(project) == 2
    err = capsys.readouterr().err
    assert "no class map is shipped" in err and "--class_map wds/digits=FILE.json" in err
    small = tmp_path / "small.json"
    small.write_text(json.dumps([0, 1, 2]))
    assert _run_transfer(project, "--class_map", f"{DATASET}={small}", "--force") == 2
    assert "the map does not fit this dataset" in capsys.readouterr().err
    assert _run_transfer(project, "--class_map", f"wds/other={small}") == 2
    assert "not among --target_datasets" in capsys.readouterr().err


def test_report_section_shows_combined_and_transfer_results(project):
    from sim_consistency.report import build_sections

    location, _, _ = project
    sections, missing, _ = build_sections(location)
    section = next(s for s in sections if s.title.startswith("Combined probes"))
    names = [t.name for t in section.tables]
    assert names == ["combined_probes", "probe_transfer"]
    combined = section.tables[0].frame
    assert {"concat", "concat_pca", "ensemble"} <= set(combined["combiner"])
    pair = combined[(combined["combiner"] == "concat") & (combined["model_set"] == "pair")]
    assert pair["gain_pp"].notna().all()
    assert any(f.startswith("concat:") and "pp" in f for f in section.findings)
    assert any("→" in f for f in section.findings)
    assert not any("combined" in m for m in missing)
