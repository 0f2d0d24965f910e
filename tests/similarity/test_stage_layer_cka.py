"""layer_cka end to end: full block×block grids, tidy CSV, heatmaps and the diagonal profile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from sim_consistency.features import open_cache
from sim_consistency.similarity import cka_grid, l2_normalize
from sim_consistency.stages import layer_cka as stage

REPO = Path(__file__).resolve().parents[2]
OTHERS = ["vit_b", "cnx", "clip"]


def _args(proj, *extra):
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


def _blocks(proj, model_id):
    with open_cache(proj.location.feature_file("wds/digits", "test", model_id)) as cache:
        return cache.block_names, [cache.block(name) for name in cache.block_names]


@pytest.fixture(scope="module")
def computed(similarity_project, tmp_path_factory):
    proj = similarity_project.copy(tmp_path_factory.mktemp("layer_cka") / "root")
    assert stage.main(_args(proj)) == 0
    return proj


def test_full_grids_match_cka_grid_and_tidy_csv(computed):
    folder = computed.location.layer_cka / "wds_digits"
    ref_names, ref_blocks = _blocks(computed, "vit_a")
    tidy = pd.read_csv(folder / "layer_cka.csv")
    with h5py.File(folder / "cka_grids.h5") as f:
        assert sorted(f["grids"]) == sorted(f"vit_a__vs__{m}" for m in OTHERS)
        for model_id in OTHERS:
            names, blocks = _blocks(computed, model_id)
            ds = f["grids"][f"vit_a__vs__{model_id}"]
            assert ds.shape == (len(ref_names), len(names))  # the full grid, not the diagonal
            assert list(ds.attrs["block_names_a"]) == ref_names
            assert list(ds.attrs["block_names_b"]) == names
            expected = cka_grid(
                [l2_normalize(x) for x in ref_blocks], [l2_normalize(x) for x in blocks]
            )
            np.testing.assert_allclose(ds[()], expected, atol=1e-10)
            rows = tidy[(tidy.model_a == "vit_a") & (tidy.model_b == model_id)]
            assert len(rows) == expected.size
            np.testing.assert_allclose(
                rows.cka.to_numpy(), expected[rows.block_index_a, rows.block_index_b], atol=1e-12
            )
            assert (rows.block_a.to_numpy() == np.array(ref_names)[rows.block_index_a]).all()
    assert set(tidy.columns) >= {
        "dataset",
        "split",
        "model_a",
        "model_b",
        "block_a",
        "block_b",
        "cka",
    }
    assert tidy.cka.between(0.0, 1.0 + 1e-12).all()


def test_diagonal_profile_over_shared_block_names(computed):
    folder = computed.location.layer_cka / "wds_digits"
    profile = pd.read_csv(folder / "diagonal_profile.csv")
    # only vit_b shares block names with the reference (same architecture, other weights)
    assert set(profile.model_id) == {"vit_b"}
    with h5py.File(folder / "cka_grids.h5") as f:
        grid = f["grids"]["vit_a__vs__vit_b"][()]
    np.testing.assert_allclose(profile.cka.to_numpy(), np.diag(grid), atol=1e-12)
    assert list(profile.block) == _blocks(computed, "vit_a")[0]


def test_heatmaps_and_profile_plot_are_png_and_pdf(computed):
    folder = computed.location.layer_cka / "wds_digits"
    stems = [folder / "heatmaps" / f"vit_a__vs__{m}" for m in OTHERS] + [
        folder / "diagonal_profile"
    ]
    for stem in stems:
        assert stem.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
        assert stem.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["reference"] == "vit_a" and meta["normalize"] is True and meta["unbiased"] is False
    assert "biased HSIC" in meta["estimator"] and meta["n_samples"] == 32
    assert not list(folder.rglob("*.partial"))


def test_pairs_all_skip_and_force(computed):
    def settings(*extra):
        return stage.STAGE.parse(_args(computed, *extra))

    assert stage.plan(settings()) == []
    assert [i.reason for i in stage.plan(settings("--force"))] == ["forced"]
    all_pairs = settings("--pairs", "all", "--unbiased")
    (item,) = stage.plan(all_pairs)
    assert item.reason == "stale" and len(item.pairs) == 6
    stage.run_item(all_pairs, item)
    with h5py.File(item.folder / "cka_grids.h5") as f:
        assert len(f["grids"]) == 6
        cnx_clip = f["grids"]["cnx__vs__clip"][()]
    names_c, blocks_c = _blocks(computed, "cnx")
    names_r, blocks_r = _blocks(computed, "clip")
    expected = cka_grid(
        [l2_normalize(x) for x in blocks_c], [l2_normalize(x) for x in blocks_r], unbiased=True
    )
    np.testing.assert_allclose(cnx_clip, expected, atol=1e-10)


def test_unknown_reference_is_an_error(computed, capsys):
    argv = _args(computed)
    argv[argv.index("vit_a")] = "vit_c"
    assert stage.main(argv) == 2
    assert "--reference: unknown model id 'vit_c'" in capsys.readouterr().err


@pytest.mark.slow
def test_script_subprocess_smoke(computed):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "layer_cka.py"), *_args(computed, "--force")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "1 job(s): 1 done, 0 failed" in result.stdout
