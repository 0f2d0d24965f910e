"""``--profile rep2rep``: Rep2Rep's choices reproduced, its probe flags, its similarity layout.

How the reproduction is checked: :mod:`tests.probe.rep2rep_reference` re-types Rep2Rep's
published search path (``lciernik/similarity_consistency``: ``tasks/linear_probe_evaluator.py``,
``tasks/hyperparameter_tuner.py``, ``tasks/regularization_tuner.py``, ``tasks/linear_probe.py``,
``eval/metrics.py``) with real torch ``DataLoader`` s and the global random state, exactly as
Rep2Rep runs it on the CPU. On the same real digits features, our probe with
``search="rep2rep"`` must pick the same ``(lr, λ)``, score the same grid points with the same
validation accuracies, hold out the same rows, and train the same final probe.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sim_consistency.features import open_cache
from sim_consistency.probe import REP2REP_LRS, WEIGHT_DECAY_GRID, fit_rep2rep, linear_probe
from sim_consistency.probe.linear_probe import coarse_to_fine_search, validation_split
from sim_consistency.project import ProjectLocation
from sim_consistency.stages import distance_matrix_computation, export_rep2rep, import_rep2rep
from sim_consistency.stages import single_model_evaluation as stage
from sim_consistency.stages.single_model_evaluation import EvaluationSettings
from tests.probe.rep2rep_reference import rep2rep_fit, rep2rep_search

pytestmark = pytest.mark.slow  # the session's extracted probe project

DATASET = "wds/digits"


def _features(location: ProjectLocation, model_id: str):
    with (
        open_cache(location.feature_file(DATASET, "train", model_id)) as train,
        open_cache(location.feature_file(DATASET, "test", model_id)) as test,
    ):
        name = train.block_names[-1]
        return train.block(name), train.labels, test.block(name), test.labels


def _normalized(X: np.ndarray) -> np.ndarray:
    """What our probe feeds its trainer (and what Rep2Rep's extraction stores): float32 rows."""
    t = torch.nn.functional.normalize(torch.as_tensor(np.asarray(X, dtype=np.float32)), dim=1)
    return t.numpy()


# -- the search reproduces Rep2Rep's choice -----------------------------------------------------


@pytest.mark.parametrize(("model_id", "seed"), [("vit", 0), ("vit", 2), ("rn", 1)])
def test_rep2rep_search_picks_rep2reps_lr_and_lambda(probe_project, model_id, seed):
    location, _ = probe_project
    X_train, y_train, X_test, y_test = _features(location, model_id)
    reference = rep2rep_search(_normalized(X_train), y_train.astype(np.int64), seed=seed)
    ours = linear_probe(
        X_train, y_train, X_test, y_test, protocol="rep2rep", search="rep2rep", seed=seed
    )
    assert (ours["lr"], ours["weight_decay"]) == (reference.lr, reference.reg_lambda)
    # same rows held out, in the same order
    np.testing.assert_array_equal(ours["val_indices"], reference.val_indices)
    np.testing.assert_array_equal(ours["search_indices"], reference.train_indices)
    # the same grid points scored, with the same validation accuracies (counts of rows)
    n_val = ours["n_val"]
    curve = {(p["lr"], p["weight_decay"]): round(p["val_top1"] * n_val) for p in ours["val_curve"]}
    assert curve == {k: round(v * n_val) for k, v in reference.scored.items()}
    # and the final probe on all training rows is Rep2Rep's, to float32 rounding
    model = rep2rep_fit(
        _normalized(X_train), y_train.astype(np.int64), lr=reference.lr,
        reg_lambda=reference.reg_lambda, seed=seed,
    )  # fmt: skip
    with torch.no_grad():
        pred = model(torch.as_tensor(_normalized(X_test))).argmax(dim=1).numpy()
    assert ours["top1"] == pytest.approx(float(np.mean(pred == y_test)), abs=1e-12)


def test_our_own_search_differs_only_by_its_rules(probe_project):
    """Without ``search="rep2rep"`` the split is ours (sorted, drawn by numpy), as documented."""
    location, _ = probe_project
    _, y_train, _, _ = _features(location, "rn")
    fit_ours, val_ours = validation_split(y_train, seed=0)
    fit_r2r, val_r2r = validation_split(y_train, seed=0, rule="rep2rep")
    assert np.all(np.diff(val_ours) > 0) and not np.all(np.diff(val_r2r) > 0)
    assert sorted(val_r2r) != val_ours.tolist()  # another draw
    for fit, val in ((fit_ours, val_ours), (fit_r2r, val_r2r)):
        assert np.intersect1d(fit, val).size == 0 and fit.size + val.size == y_train.size


def test_rep2rep_search_rules_on_constructed_curves():
    """Spans ±4 ±2 ±1 around the best coarse point; ties as in Rep2Rep's tuners."""
    flat = {i: 0.5 for i in range(64)}
    best, scores = coarse_to_fine_search(flat.__getitem__, rule="rep2rep")
    # coarse tie -> the last (largest) coarse point; then neighbours never win a tie
    assert best == 63 and sorted(scores) == [0, 9, 18, 27, 36, 45, 54, 59, 61, 62, 63]
    peak = {i: 100.0 - abs(i - 20) for i in range(64)}  # accuracies are >= 0
    best, scores = coarse_to_fine_search(peak.__getitem__, rule="rep2rep")
    # coarse best 18; ±4: 14, 22 (22 ties 18: no move); ±2: 16, 20 (moves); ±1: 19, 21
    assert best == 20
    assert sorted(set(scores) - {0, 9, 18, 27, 36, 45, 54, 63}) == [14, 16, 19, 20, 21, 22]
    # a right neighbour equal to the left one wins; equal to the peak it does not
    tie = {i: 0.0 for i in range(64)} | {27: 1.0, 23: 2.0, 31: 2.0}
    best, _ = coarse_to_fine_search(lambda i: tie[i], rule="rep2rep")
    assert best == 31
    tie = {i: 0.0 for i in range(64)} | {27: 1.0, 31: 1.0}
    best, _ = coarse_to_fine_search(lambda i: tie[i], rule="rep2rep")
    assert best == 27


@pytest.mark.parametrize("regularization", ["L1", "L2", "weight_decay"])
def test_trainer_with_rep2reps_stream_equals_rep2reps_trainer(probe_project, regularization):
    location, _ = probe_project
    X_train, y_train, _, _ = _features(location, "vit")
    X = _normalized(X_train)
    y = y_train.astype(np.int64)
    lam = {"L1": 1e-4, "L2": 1e-3, "weight_decay": 1e-2}[regularization]
    model = rep2rep_fit(X, y, lr=0.01, reg_lambda=lam, seed=3, batch_size=64, epochs=3,
                        regularization=regularization)  # fmt: skip
    W, b = fit_rep2rep(
        torch.as_tensor(X), torch.as_tensor(y), 10, lr=0.01, weight_decay=lam, seed=3,
        batch_size=64, epochs=3, regularization=regularization, rng="rep2rep",
    )  # fmt: skip
    torch.testing.assert_close(W, model.weight.detach().T, rtol=0, atol=1e-6)
    torch.testing.assert_close(b, model.bias.detach(), rtol=0, atol=1e-6)
    # the penalty matters: L1/L2 differ from plain AdamW decay at the same λ
    if regularization != "weight_decay":
        W_decay, _ = fit_rep2rep(
            torch.as_tensor(X), torch.as_tensor(y), 10, lr=0.01, weight_decay=lam, seed=3,
            batch_size=64, epochs=3, rng="rep2rep",
        )  # fmt: skip
        assert (W - W_decay).abs().max() > 1e-4


# -- the stage: profile, flags, outputs ---------------------------------------------------------


def _copy_project(location: ProjectLocation, dest: Path) -> tuple[ProjectLocation, str]:
    new = ProjectLocation.resolve(dest).create()
    shutil.copytree(location.features, new.features, dirs_exist_ok=True)
    shutil.copy(location.root / "models.json", new.root / "models.json")
    return new, str(new.root / "models.json")


def _settings(location: ProjectLocation, config: str, *extra: str) -> EvaluationSettings:
    from sim_consistency.runtime import build_parser, settings_from_namespace

    parser = build_parser(EvaluationSettings, description="")
    args = parser.parse_args(
        ["--project_root", str(location.root), "--models_config", config, *extra]
    )
    return settings_from_namespace(EvaluationSettings, args).validated()


def test_profile_sets_rep2reps_defaults_and_explicit_flags_win(probe_project):
    location, config = probe_project
    ours = _settings(location, config)
    assert (ours.protocol, ours.search, ours.seeds) == ("fast", "simc", (0,))
    r2r = _settings(location, config, "--profile", "rep2rep")
    assert (r2r.protocol, r2r.search, r2r.seeds) == ("rep2rep", "rep2rep", (0, 1, 2))
    assert r2r.lrs == REP2REP_LRS and (r2r.epochs, r2r.batch_size, r2r.val_proportion) == (
        20, 1024, 0.2,
    )  # fmt: skip
    mixed = _settings(location, config, "--profile", "rep2rep", "--search", "simc", "--seeds", "5")
    assert (mixed.protocol, mixed.search, mixed.seeds) == ("rep2rep", "simc", (5,))
    # the default outputs keep their content keys: no new key unless a setting changes
    assert "search" not in ours.hyper_parameters(0)
    assert r2r.hyper_parameters(0)["search"] == "rep2rep"


def test_profile_run_writes_rep2reps_choice(probe_project, tmp_path):
    location, config = _copy_project(probe_project[0], tmp_path / "root")
    argv = ["--project_root", str(location.root), "--models_config", config,
            "--datasets", DATASET, "--device", "cpu", "--model_key", "rn"]  # fmt: skip
    assert stage.main([*argv, "--profile", "rep2rep"]) == 0
    X_train, y_train, _, _ = _features(location, "rn")
    folder = location.linear_probe / "single_model" / "wds_digits" / "rn"
    assert sorted(p.name for p in folder.iterdir()) == [
        f"rep2rep_val_0.2_search_rep2rep_seed_{seed}" for seed in (0, 1, 2)
    ]
    record = json.loads((folder / "rep2rep_val_0.2_search_rep2rep_seed_0/results.json").read_text())
    block = next(iter(record["blocks"].values()))
    reference = rep2rep_search(_normalized(X_train), y_train.astype(np.int64), seed=0)
    assert (block["lr"], block["weight_decay"]) == (reference.lr, reference.reg_lambda)
    assert record["hyper_parameters"]["search"] == "rep2rep"


def test_val_proportion_zero_trains_once_with_fixed_lr_and_lambda(probe_project, tmp_path):
    location, config = _copy_project(probe_project[0], tmp_path / "root")
    argv = ["--project_root", str(location.root), "--models_config", config,
            "--datasets", DATASET, "--device", "cpu", "--model_key", "vit", "--seeds", "0"]  # fmt: skip
    assert stage.main([*argv, "--protocol", "rep2rep", "--val_proportion", "0",
                       "--fewshot_lr", "0.01", "--reg_lambda", "0.001",
                       "--fewshot_epochs", "5", "--batch_size", "64"]) == 0  # fmt: skip
    folder = location.linear_probe / "single_model" / "wds_digits" / "vit"
    record = json.loads((folder / "rep2rep_val_0_lambda_0.001_lr_0.01_seed_0" / "results.json")
                        .read_text())  # fmt: skip
    block = next(iter(record["blocks"].values()))
    assert (block["lr"], block["weight_decay"], block["val_curve"], block["n_val"]) == (
        0.01, 0.001, [], 0,
    )  # fmt: skip
    X_train, y_train, X_test, y_test = _features(location, "vit")
    W, b = fit_rep2rep(
        torch.as_tensor(_normalized(X_train)), torch.as_tensor(y_train.astype(np.int64)), 10,
        lr=0.01, weight_decay=0.001, epochs=5, batch_size=64, seed=0,
    )  # fmt: skip
    pred = (torch.as_tensor(_normalized(X_test)) @ W + b).argmax(dim=1).numpy()
    assert block["top1"] == pytest.approx(float(np.mean(pred == y_test)), abs=1e-12)
    assert block["n_train"] == y_train.size
    # fast protocol: one L-BFGS fit at the fixed λ (Rep2Rep's default 0.2)
    assert stage.main([*argv, "--val_proportion", "0"]) == 0
    record = json.loads((folder / "fast_val_0_lambda_0.2_seed_0" / "results.json").read_text())
    assert next(iter(record["blocks"].values()))["weight_decay"] == 0.2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--val_proportion", "1"], "--val_proportion must be in [0, 1)"),
        (["--val_proportion", "-0.1"], "--val_proportion must be in [0, 1)"),
        (["--protocol", "rep2rep", "--fewshot_epochs", "0"], "--fewshot_epochs must be a positive"),
        (["--protocol", "rep2rep", "--batch_size", "0"], "--batch_size must be a positive"),
        (["--protocol", "rep2rep", "--fewshot_lr", "0.1", "-1"], "learning rates must be positive"),
        (["--protocol", "rep2rep", "--fewshot_lr", "nan"], "learning rates must be positive"),
        (["--fewshot_lr", "0.1"], "--fewshot_lr applies to --protocol rep2rep"),
        (["--regularization", "L1"], "--regularization L1 needs --protocol rep2rep"),
        (["--reg_lambda", "0.1"], "--reg_lambda 0.1 is used only with --val_proportion 0"),
        (
            ["--protocol", "rep2rep", "--val_proportion", "0", "--fewshot_lr", "0.1", "0.01"],
            "give exactly one --fewshot_lr",
        ),
        (["--val_proportion", "0", "--reg_lambda", "-1"], "--reg_lambda must be a number >= 0"),
        (["--val_proportion", "0", "--reg_lambda", "0"], "the fast probe needs a penalty"),
        (["--regularization", "L3"], "invalid choice: 'L3'"),
        (["--profile", "rep2rep2"], "invalid choice: 'rep2rep2'"),
    ],
)
def test_bad_probe_flags_exit_2_with_a_clear_message(
    probe_project, tmp_path, capsys, flags, message
):
    location, config = probe_project
    argv = ["--project_root", str(tmp_path / "root"), "--models_config", config,
            "--datasets", DATASET, "--device", "cpu"]  # fmt: skip
    try:
        code = stage.main([*argv, *flags])
    except SystemExit as exc:  # argparse's own refusals (choices)
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_help_says_which_defaults_are_ours(capsys):
    with pytest.raises(SystemExit):
        stage.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "fast (ours); rep2rep with --profile rep2rep" in text
    assert "simc; rep2rep with --profile rep2rep" in text
    with pytest.raises(SystemExit):
        distance_matrix_computation.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "test (ours); train with --profile rep2rep" in text
    assert "all rows; 10000 with --profile rep2rep" in text


# -- similarities: the profile, and the export in Rep2Rep's layout --------------------------------

METRICS = [
    {"sim_method": "cka", "sim_kernel": "linear"},
    {"sim_method": "cka", "sim_kernel": "rbf", "sigma": 1},
    {"sim_method": "rsa", "rsa_method": "cosine", "corr_method": "spearman"},
]


@pytest.fixture(scope="module")
def profiled(probe_project, tmp_path_factory):
    """Similarities with ``--profile rep2rep``, ``--max_samples 60`` (the 10k rule, scaled)."""
    location, config = _copy_project(probe_project[0], tmp_path_factory.mktemp("sim") / "root")
    metrics = location.root / "metrics.json"
    metrics.write_text(json.dumps(METRICS))
    argv = ["--project_root", str(location.root), "--models_config", config,
            "--datasets", DATASET, "--similarity_config", str(metrics), "--device", "cpu"]  # fmt: skip
    assert (
        distance_matrix_computation.main([*argv, "--profile", "rep2rep", "--max_samples", "60"])
        == 0
    )
    return location, config, argv


def test_profile_similarities_use_train_split_and_the_subset_rule(profiled):
    from sim_consistency.data import stratified_subset
    from sim_consistency.similarity import cka, l2_normalize

    location, _, _ = profiled
    folder = location.similarity_dir(DATASET, "cka_kernel_linear_unbiased")
    meta = json.loads((folder / "metadata.json").read_text())
    assert (meta["split"], meta["n_samples"], meta["max_samples"]) == ("train", 60, 60)
    assert meta["metric"]["unbiased"] is True
    blocks = {}
    for model_id in ("vit", "rn"):
        with open_cache(location.feature_file(DATASET, "train", model_id)) as cache:
            rows = stratified_subset(cache.labels, max_samples=60, seed=0)
            blocks[model_id] = cache.block(cache.block_names[-1])[rows]
    X, Y = (l2_normalize(b) for b in blocks.values())
    from sim_consistency.similarity.matrix_files import read_similarity_matrix

    matrix = read_similarity_matrix(folder)
    assert matrix.loc["vit", "rn"] == pytest.approx(cka(X, Y, unbiased=True), abs=1e-12)
    assert location.similarity_dir(DATASET, "cka_kernel_rbf_unbiased_sigma_1.0").is_dir()
    assert location.similarity_dir(DATASET, "rsa_method_cosine").is_dir()


def test_profile_without_a_subset_and_with_an_explicit_split(profiled):
    location, _, argv = profiled
    assert distance_matrix_computation.main([*argv, "--profile", "rep2rep"]) == 0
    meta = json.loads(
        (location.similarity_dir(DATASET, "rsa_method_cosine") / "metadata.json").read_text()
    )
    with open_cache(location.feature_file(DATASET, "train", "vit")) as cache:
        n_train = len(cache.labels)
    assert n_train <= 10_000 and (meta["split"], meta["n_samples"]) == ("train", n_train)
    assert distance_matrix_computation.main([*argv, "--profile", "rep2rep", "--split", "test"]) == 0
    meta = json.loads(
        (location.similarity_dir(DATASET, "rsa_method_cosine") / "metadata.json").read_text()
    )
    assert meta["split"] == "test" and meta["max_samples"] == 10_000
    assert distance_matrix_computation.main([*argv, "--max_samples", "-1"]) == 2


def test_export_in_rep2reps_layout_round_trips(profiled, tmp_path):
    from sim_consistency.similarity.matrix_files import read_similarity_matrix

    location, _, _ = profiled
    out = tmp_path / "rep2rep"
    assert export_rep2rep.main(
        ["--project_root", str(location.root), "--rep2rep_root", str(out), "--datasets", DATASET]
    ) == 0  # fmt: skip
    exported = sorted(p.name for p in (out / "model_similarities" / "wds_digits").iterdir())
    assert exported == sorted(
        ["cka_kernel_linear_unbiased", "cka_kernel_rbf_unbiased_sigma_1.0", "rsa_method_cosine"]
    )
    for slug in exported:
        folder = out / "model_similarities" / "wds_digits" / slug
        assert sorted(p.name for p in folder.iterdir()) == ["model_ids.txt", "similarity_matrix.pt"]
        matrix = torch.load(folder / "similarity_matrix.pt", weights_only=False)  # as Rep2Rep
        assert isinstance(matrix, np.ndarray) and matrix.dtype == np.float64
        ids = [line.strip() for line in (folder / "model_ids.txt").read_text().splitlines()]
        ours = read_similarity_matrix(location.similarity_dir(DATASET, slug))
        assert ids == list(ours.index)
        np.testing.assert_array_equal(matrix, ours.to_numpy())
    # round trip through our importer into a fresh project
    fresh = ProjectLocation.resolve(tmp_path / "fresh").create()
    assert import_rep2rep.main(
        ["similarities", "--project_root", str(fresh.root), "--rep2rep_root", str(out),
         "--datasets", DATASET]
    ) == 0  # fmt: skip
    for slug in exported:
        back = read_similarity_matrix(fresh.similarity_dir(DATASET, slug))
        ours = read_similarity_matrix(location.similarity_dir(DATASET, slug))
        assert list(back.index) == list(ours.index)
        np.testing.assert_array_equal(back.to_numpy(), ours.to_numpy())


def test_export_of_a_missing_metric_names_it(profiled, tmp_path, capsys):
    location, _, _ = profiled
    argv = ["--project_root", str(location.root), "--rep2rep_root", str(tmp_path / "o"),
            "--datasets", DATASET, "--methods", "cka_kernel_linear_biased"]  # fmt: skip
    assert export_rep2rep.main(argv) == 2
    assert "cka_kernel_linear_biased" in capsys.readouterr().err
    assert not (tmp_path / "o" / "model_similarities").exists()


def test_weight_decay_grid_is_rep2reps():
    grid = np.logspace(-6, 1, num=8 + 7 * 8).tolist()  # tune_lambda's lambda_list
    assert grid == WEIGHT_DECAY_GRID.tolist()
