"""``--ci`` on distance_matrix_computation and layer_cka: exact points, stored intervals, keys.

Real features: the session's digits caches of tiny timm/open_clip models (tests/similarity).
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from sim_consistency.config.similarity import load_similarity_config, parse_similarity_config
from sim_consistency.features import open_cache
from sim_consistency.similarity import l2_normalize, metric_slug
from sim_consistency.stages import distance_matrix_computation as dmc
from sim_consistency.stages import layer_cka
from sim_consistency.uncertainty import cka_grid_ci, row_groups, similarity_matrix_ci

METRICS = [
    {"sim_method": "cka", "sim_kernel": "linear", "unbiased": True},
    {"sim_method": "cka", "sim_kernel": "linear", "unbiased": False},
    {"sim_method": "cka", "sim_kernel": "rbf", "unbiased": True, "sigma": 0.4},
    {"sim_method": "rsa", "rsa_method": "correlation", "corr_method": "spearman"},
    {"sim_method": "mknn", "k": 5},
]
K = 8  # 32 cached rows: 4 per group


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("ci_config") / "metrics.json"
    path.write_text(json.dumps(METRICS))
    return path


def _dmc_args(proj, config, *extra):
    return [
        "--project_root",
        str(proj.location.root),
        "--models_config",
        str(proj.models_config),
        "--datasets",
        "wds/digits",
        "--similarity_config",
        str(config),
        *extra,
    ]


def _read_folder(folder):
    with h5py.File(folder / "similarity_matrix.h5") as f:
        return {name: f[name][()] for name in f if name != "model_ids"}


@pytest.fixture(scope="module")
def matrices(similarity_project, config, tmp_path_factory):
    """The plain matrices, then the same project rerun with ``--ci``: (project, plain, ci)."""
    proj = similarity_project.copy(tmp_path_factory.mktemp("dmc_ci") / "root")
    assert dmc.main(_dmc_args(proj, config)) == 0
    specs = load_similarity_config(config)
    folders = {
        metric_slug(s): proj.location.similarity_dir("wds/digits", metric_slug(s)) for s in specs
    }
    plain = {slug: _read_folder(folder) for slug, folder in folders.items()}
    assert dmc.main(_dmc_args(proj, config, "--ci", "--ci_groups", str(K), "--ci_seed", "3")) == 0
    with_ci = {slug: _read_folder(folder) for slug, folder in folders.items()}
    return proj, folders, plain, with_ci


def test_points_are_bitwise_those_without_ci(matrices):
    _, _, plain, with_ci = matrices
    for slug in plain:
        a, b = plain[slug]["similarity_matrix"], with_ci[slug]["similarity_matrix"]
        assert a.tobytes() == b.tobytes(), slug


def test_intervals_stored_and_match_the_library(matrices, config):
    proj, folders, _, with_ci = matrices
    ids = list(json.loads(proj.models_config.read_text()))
    feats = []
    for model_id in ids:
        with open_cache(proj.location.feature_file("wds/digits", "test", model_id)) as cache:
            feats.append(cache.block(cache.block_names[-1]))
    for spec in load_similarity_config(config):
        slug = metric_slug(spec)
        stored, folder = with_ci[slug], folders[slug]
        meta = json.loads((folder / "metadata.json").read_text())
        assert meta["ci"] is True
        if spec.sim_method == "mknn":
            assert "se" not in stored
            assert "neighbour sets" in meta["ci_unavailable"]
            assert not (folder / "similarity_ci.csv").exists()
            continue
        expected = similarity_matrix_ci(feats, spec, n_groups=K, seed=3)
        for name in ("se", "ci_low", "ci_high"):
            np.testing.assert_allclose(stored[name], getattr(expected, name), atol=1e-12)
        np.testing.assert_array_equal(stored["ci_groups"], row_groups(32, K, seed=3))
        off = ~np.eye(len(ids), dtype=bool)
        assert (stored["se"][off] > 0).all() and (stored["ci_low"] <= stored["ci_high"]).all()
        # The interval is centred on the bias-corrected estimate (jackknife.py): its centre is
        # point - bias, so the point lies within the interval widened by |bias|.
        centre = (stored["ci_low"] + stored["ci_high"]) / 2
        bias = np.abs(stored["similarity_matrix"] - centre)
        point = stored["similarity_matrix"]
        assert (stored["ci_low"] - bias <= point + 1e-12).all()
        assert (point <= stored["ci_high"] + bias + 1e-12).all()
        if spec.unbiased or spec.sim_method == "rsa":  # negligible bias: point inside
            inside = (stored["ci_low"] <= point) & (point <= stored["ci_high"])
            assert inside[off].mean() > 0.9, slug
        assert meta["ci_n_groups"] == K and meta["ci_seed"] == 3 and meta["ci_level"] == 0.95
        assert (
            "jackknife" in meta["ci_method"] and f"row_groups(32, {K}, seed=3)" in meta["ci_groups"]
        )
        table = pd.read_csv(folder / "similarity_ci.csv")
        assert list(table.columns) == [
            "model_a",
            "model_b",
            "similarity",
            "se",
            "ci_low",
            "ci_high",
        ]
        assert len(table) == len(ids) ** 2
        row = table[(table.model_a == ids[0]) & (table.model_b == ids[1])].iloc[0]
        assert row.similarity == pytest.approx(point[0, 1], abs=1e-15)
        assert row.ci_low == pytest.approx(stored["ci_low"][0, 1], abs=1e-15)
        assert not (folder / "similarity_ci.png").exists()  # the aggregation draws it


def test_aggregation_carries_and_draws_the_intervals(matrices):
    """``similarities.csv`` gets each pair's stored interval; the heatmap hatches wide ones."""
    from sim_consistency.aggregate import collect_similarities, plot_similarity_heatmaps

    proj = matrices[0]
    table = collect_similarities(proj.location)
    assert {"se", "ci_low", "ci_high"} <= set(table.columns)
    for slug, part in table.groupby("metric"):
        folder = proj.location.model_similarities / "wds_digits" / slug
        stored = _read_folder(folder)
        if "se" not in stored:  # mutual k-NN: no interval
            assert part["ci_low"].isna().all(), slug
            continue
        ids = (folder / "model_ids.txt").read_text().split()
        a, b = ids.index(part.model_a.iloc[0]), ids.index(part.model_b.iloc[0])
        assert part.ci_low.iloc[0] == stored["ci_low"][a, b], slug
        assert part.se.notna().all(), slug
    written = plot_similarity_heatmaps(table, proj.location.plots)
    assert len(written) == table.groupby(["dataset_slug", "metric"]).ngroups
    assert all(p.stat().st_size > 0 for p in written)


def test_similarity_heatmap_hatches_wide_intervals(tmp_path, monkeypatch):
    from matplotlib.collections import PatchCollection

    import sim_consistency.aggregate as agg

    figures = []
    monkeypatch.setattr(agg, "save_figure", lambda fig, stem, **kw: figures.append(fig) or [stem])
    rows = pd.DataFrame(
        {
            "dataset": "d",
            "dataset_slug": "d",
            "metric": "m",
            "model_a": ["a", "a", "b"],
            "model_b": ["b", "c", "c"],
            "similarity": [0.9, 0.5, 0.6],
            "se": [0.01, 0.1, np.nan],
            "ci_low": [0.88, 0.3, np.nan],
            "ci_high": [0.92, 0.7, np.nan],
        }
    )
    agg.plot_similarity_heatmaps(rows, tmp_path)
    (ax,) = [a for a in figures[0].axes if a.get_title()]
    (hatched,) = [c for c in ax.collections if isinstance(c, PatchCollection)]
    # (a, c) is ±0.2 and (b, c) has no interval, both mirrored: 4 cells; (a, b) is ±0.02
    assert len(hatched.get_paths()) == 4
    assert "median half-width 0.110" in ax.get_title()


def test_content_key_ci_recomputes_and_plain_reuses(matrices, config):
    proj, _, _, _ = matrices

    def plan(*extra):
        return dmc.plan(dmc.STAGE.parse(_dmc_args(proj, config, *extra)))

    ci_args = ("--ci", "--ci_groups", str(K), "--ci_seed", "3")
    assert plan(*ci_args) == []  # current
    assert plan() == []  # plain after --ci: the points are the same, reused
    (item,) = plan("--ci", "--ci_groups", str(K), "--ci_seed", "4")
    assert {o.reason for o in item.outputs} == {"stale"} and len(item.outputs) == len(METRICS)
    assert item.ci and item.ci_seed == 4


def test_plain_then_ci_plans_a_rebuild(similarity_project, config, tmp_path):
    proj = similarity_project.copy(tmp_path / "root")
    narrow = tmp_path / "one.json"
    narrow.write_text(json.dumps(METRICS[:1]))
    assert dmc.main(_dmc_args(proj, narrow)) == 0
    plan = dmc.plan(dmc.STAGE.parse(_dmc_args(proj, narrow, "--ci")))
    assert [o.reason for o in plan[0].outputs] == ["missing"]  # no interval files yet


def test_bad_ci_groups_is_a_clean_error(similarity_project, config, capsys):
    argv = _dmc_args(similarity_project, config, "--ci", "--ci_groups", "1")
    assert dmc.main(argv) == 2
    assert "--ci_groups" in capsys.readouterr().err


# --- layer_cka ---------------------------------------------------------------------------


def _cka_args(proj, *extra):
    return [
        "--project_root",
        str(proj.location.root),
        "--models_config",
        str(proj.models_config),
        "--datasets",
        "wds/digits",
        "--reference",
        "vit_a",
        *extra,
    ]


def _grids(folder):
    with h5py.File(folder / "cka_grids.h5") as f:
        out = {name: {p: f[name][p][()] for p in f[name]} for name in f if name != "ci_groups"}
    return out


@pytest.mark.parametrize("unbiased", [False, True])
def test_layer_cka_ci(similarity_project, tmp_path, unbiased):
    proj = similarity_project.copy(tmp_path / "root")
    flags = ("--unbiased",) if unbiased else ()
    assert layer_cka.main(_cka_args(proj, *flags)) == 0
    folder = proj.location.layer_cka / "wds_digits"
    plain = _grids(folder)
    ci_flags = (*flags, "--ci", "--ci_groups", str(K))
    (item,) = layer_cka.plan(layer_cka.STAGE.parse(_cka_args(proj, *ci_flags)))
    assert item.reason == "stale"
    assert layer_cka.main(_cka_args(proj, *ci_flags)) == 0
    stored = _grids(folder)
    assert set(stored) == {"grids", "se", "ci_low", "ci_high"}
    for pair, grid in plain["grids"].items():
        assert stored["grids"][pair].tobytes() == grid.tobytes(), pair
        assert (stored["ci_low"][pair] <= stored["ci_high"][pair]).all()

    # Against the library on the cached blocks (same groups: K, seed 0).
    def blocks(model_id):
        with open_cache(proj.location.feature_file("wds/digits", "test", model_id)) as cache:
            return [l2_normalize(cache.block(name)) for name in cache.block_names]

    expected = cka_grid_ci(blocks("vit_a"), blocks("cnx"), unbiased, n_groups=K, seed=0)
    np.testing.assert_allclose(stored["se"]["vit_a__vs__cnx"], expected.se, atol=1e-12)
    np.testing.assert_allclose(stored["ci_low"]["vit_a__vs__cnx"], expected.ci_low, atol=1e-10)
    tidy = pd.read_csv(folder / "layer_cka.csv")
    assert {"se", "ci_low", "ci_high"} <= set(tidy.columns)
    cell = tidy[(tidy.model_b == "cnx") & (tidy.block_index_a == 1) & (tidy.block_index_b == 2)]
    assert cell.se.iloc[0] == pytest.approx(expected.se[1, 2], abs=1e-12)
    profile = pd.read_csv(folder / "diagonal_profile.csv")
    assert (profile.ci_low <= profile.ci_high).all()
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["ci"] is True and meta["ci_n_groups"] == K and meta["ci_seed"] == 0
    assert meta["point_content_key"] != meta["content_key"]
    # A plain run reuses the --ci outputs; a --ci run with the same settings too.
    assert layer_cka.plan(layer_cka.STAGE.parse(_cka_args(proj, *flags))) == []
    assert layer_cka.plan(layer_cka.STAGE.parse(_cka_args(proj, *ci_flags))) == []
    assert (folder / "heatmaps" / "vit_a__vs__cnx.png").stat().st_size > 0


def _work_item(folder, spec, m, ci):
    ids = tuple(f"model_{i}" for i in range(m))
    out = dmc.MetricOutput(spec, metric_slug(spec), folder, "key", "missing", "key")
    return dmc.WorkItem(
        dataset="synthetic",
        split="test",
        model_ids=ids,
        cache_paths=tuple(folder / f"{i}.h5" for i in ids),
        input_keys=("x",) * m,
        block=None,
        blocks=("last",) * m,
        normalize=True,
        outputs=(out,),
        device="cpu",
        memory_budget=1 << 30,
        ci=ci,
    )


def test_default_ci_groups_reuse_the_plain_pass_bitwise(tmp_path):
    """``--ci`` with the default K = 20, seed 0 and n > d (feature space): linear CKA's
    intervals come from the plain pass's own group products (``_linear_one_pass``); the
    stage's matrices are bitwise those without ``--ci`` and the intervals equal the separate
    pass's. (The digits caches have d > n, where linear CKA works in Gram space.)"""
    from sim_consistency.uncertainty import jackknife_interval
    from sim_consistency.uncertainty.similarity import _linear_one_pass, leave_out_matrix

    rng = np.random.default_rng(0)
    shared = rng.normal(size=(240, 6))
    feats = [(shared @ rng.normal(size=(6, 10)) + rng.normal(size=(240, 10))) for _ in range(4)]
    feats = [X.astype(np.float32) for X in feats]
    normed = [l2_normalize(X) for X in feats]
    groups = row_groups(240, 20, seed=0)
    for spec in parse_similarity_config(METRICS[:2]):
        assert _linear_one_pass(normed, spec, groups, 1 << 30, {}) is not None
        got = {}
        for ci in (False, True):
            folder = tmp_path / f"{metric_slug(spec)}_{ci}"
            folder.mkdir()
            dmc.write_matrices(_work_item(folder, spec, 4, ci), feats)
            got[ci] = _read_folder(folder)
        assert got[True]["similarity_matrix"].tobytes() == got[False]["similarity_matrix"].tobytes()
        assert np.array_equal(got[True]["ci_groups"], groups)
        theta = leave_out_matrix(normed, spec, groups)  # the separate pass
        two_pass = jackknife_interval(got[False]["similarity_matrix"], theta)
        for name in ("se", "ci_low", "ci_high"):
            np.testing.assert_allclose(got[True][name], getattr(two_pass, name), rtol=0, atol=1e-12)
