"""Consistency stage: Mantel p-values and bootstrap-over-models intervals in its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim_consistency.project import ProjectLocation
from sim_consistency.similarity import consistency
from sim_consistency.similarity.matrix_files import write_similarity_matrix
from sim_consistency.stages import consistency as stage

R2R_CONFIG = Path(__file__).parents[1] / "fixtures" / "rep2rep" / "models_config_wo_alignment.json"
SLUG = "cka_kernel_linear_unbiased"
M = 24


def _symmetric(rng: np.random.Generator, base: np.ndarray | None = None) -> np.ndarray:
    x = rng.uniform(size=(M, M)) if base is None else base + 0.05 * rng.normal(size=(M, M))
    x = (x + x.T) / 2
    np.fill_diagonal(x, 1.0)
    return x


@pytest.fixture
def study(project: ProjectLocation, tmp_path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Three datasets: ``close`` is ``base`` plus small noise, ``other`` is independent."""
    raw = json.loads(R2R_CONFIG.read_text())
    ids = sorted(raw)[:M]
    config = tmp_path / "models.json"
    config.write_text(json.dumps({k: raw[k] for k in ids}))
    rng = np.random.default_rng(7)
    base = _symmetric(rng)
    matrices = {"wds/base": base, "wds/close": _symmetric(rng, base), "wds/other": _symmetric(rng)}
    for dataset, matrix in matrices.items():
        folder = project.similarity_dir(dataset, SLUG)
        folder.mkdir(parents=True)
        write_similarity_matrix(
            folder, matrix, ids, {"metric_slug": SLUG, "content_key": f"key-{dataset}"}
        )
    sim = tmp_path / "sim.json"
    sim.write_text(json.dumps([{"sim_method": "cka", "sim_kernel": "linear"}]))
    args = ["--project_root", str(project.root), "--models_config", str(config)]
    args += ["--datasets", *matrices, "--similarity_config", str(sim)]
    return args, matrices


def _frames(matrices: dict[str, np.ndarray], ids: list[str]) -> dict[str, pd.DataFrame]:
    return {d: pd.DataFrame(m, index=ids, columns=ids) for d, m in matrices.items()}


def test_p_values_and_intervals_are_written_and_sane(project: ProjectLocation, study) -> None:
    args, matrices = study
    assert stage.main([*args, "--n_permutations", "199", "--n_bootstrap", "300"]) == 0
    folder = project.consistency / SLUG / "all_pairs"
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["uncertainty"]["n_permutations"] == 199
    assert meta["uncertainty"]["n_bootstrap"] == 300 and meta["uncertainty"]["seed"] == 0
    ids = sorted(json.loads(Path(args[3]).read_text()))
    for method in ("pearson", "spearman"):
        rows = pd.read_csv(folder / f"uncertainty_{method}.csv").set_index(
            ["dataset_a", "dataset_b"]
        )
        close = rows.loc[("wds/base", "wds/close")]
        # near-identical matrices: the smallest p-value 199 permutations can give, CI near 1
        assert close["p_value"] == pytest.approx(1 / 200)
        assert 0.9 < close["ci_low"] <= close["consistency"] <= close["ci_high"] <= 1
        assert bool(close["resolved"])
        for pair in (("wds/base", "wds/other"), ("wds/close", "wds/other")):
            independent = rows.loc[pair]
            assert independent["ci_low"] < 0 < independent["ci_high"]
            # one of these has p = 0.03 by chance; the interval still marks it unresolved
            assert 0 < independent["p_value"] <= 1 and not bool(independent["resolved"])
        # the point statistic is bitwise the table entry, and the table is what it was
        table = pd.read_csv(folder / f"consistency_{method}.csv", index_col=0)
        expected = consistency(_frames(matrices, ids), method=method)
        assert np.array_equal(table.to_numpy(), expected.to_numpy())
        for (a, b), r in rows.iterrows():
            assert r["consistency"] == table.loc[a, b]
    assert meta["unresolved_pairs"] == {"pearson": 2, "spearman": 2}
    assert (folder / "heatmap_pearson.png").stat().st_size > 0


def test_settings_are_part_of_the_content_key_and_off_writes_no_file(
    project: ProjectLocation, study
) -> None:
    args, _ = study
    folder = project.consistency / SLUG / "all_pairs"
    assert stage.main([*args, "--n_permutations", "0", "--n_bootstrap", "0"]) == 0
    key_off = json.loads((folder / "metadata.json").read_text())["content_key"]
    assert not (folder / "uncertainty_pearson.csv").exists()
    table_off = (folder / "consistency_pearson.csv").read_bytes()
    assert stage.main([*args, "--n_permutations", "99", "--n_bootstrap", "0"]) == 0
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["content_key"] != key_off  # recomputed, not reused
    rows = pd.read_csv(folder / "uncertainty_pearson.csv")
    assert rows["p_value"].notna().all() and rows["ci_low"].isna().all()
    # only the test ran: the near-identical pair is resolved by its p-value alone
    close = rows[(rows["dataset_a"] == "wds/base") & (rows["dataset_b"] == "wds/close")]
    assert close["resolved"].tolist() == [True]
    assert (folder / "consistency_pearson.csv").read_bytes() == table_off  # bitwise unchanged
    assert stage.main([*args, "--n_bootstrap", "5"]) == 2  # too few replicates: exit 2


def test_restricted_pairs_get_within_set_tests(project: ProjectLocation, study) -> None:
    """--set_a/--set_b: Mantel p-values (models permuted within their set) and stratified
    bootstrap intervals; the table entries are unchanged."""
    args, matrices = study
    restrict = ["--set_a", "architecture_class=Transformer", "--set_b", "architecture_class="
                "Convolutional"]  # fmt: skip
    assert stage.main([*args, *restrict, "--n_bootstrap", "300", "--n_permutations", "199"]) == 0
    folder = next((project.consistency / SLUG).glob("*__vs__*"))
    meta = json.loads((folder / "metadata.json").read_text())
    assert "within their model-set stratum" in meta["uncertainty"]["restriction"]
    pairs = [tuple(p) for p in meta["model_pairs"]]
    ids = sorted(json.loads(Path(args[3]).read_text()))
    for method in ("pearson", "spearman"):
        rows = pd.read_csv(folder / f"uncertainty_{method}.csv").set_index(
            ["dataset_a", "dataset_b"]
        )
        close = rows.loc[("wds/base", "wds/close")]
        assert close["p_value"] == pytest.approx(1 / 200) and bool(close["resolved"])
        assert 0.8 < close["ci_low"] <= close["consistency"] <= close["ci_high"]
        for pair in (("wds/base", "wds/other"), ("wds/close", "wds/other")):
            assert rows.loc[pair, "p_value"] > 0.05 and not bool(rows.loc[pair, "resolved"])
        table = pd.read_csv(folder / f"consistency_{method}.csv", index_col=0)
        expected = consistency(_frames(matrices, ids), method=method, model_pairs=pairs)
        assert np.array_equal(table.to_numpy(), expected.to_numpy())
        for (a, b), r in rows.iterrows():
            assert r["consistency"] == table.loc[a, b]
        assert rows["tested"].all() and rows["note"].isna().all()
    assert meta["unresolved_pairs"] == {"pearson": 2, "spearman": 2}


def test_restriction_with_a_one_model_set_has_no_interval(project: ProjectLocation, study):
    """One Self-Supervised model: permuting the 10 Supervised ones still tests; resampling the
    single model of B is impossible, so the interval is NaN with the reason."""
    args, _ = study
    restrict = ["--set_a", "objective=Supervised", "--set_b", "objective=Self-Supervised"]
    assert stage.main([*args, *restrict, "--n_bootstrap", "50", "--n_permutations", "99"]) == 0
    folder = next((project.consistency / SLUG).glob("*__vs__*"))
    rows = pd.read_csv(folder / "uncertainty_pearson.csv")
    assert rows["consistency"].notna().all() and rows["p_value"].notna().all()
    assert rows["ci_low"].isna().all() and rows["note"].str.contains("one model").all()
    assert rows["tested"].all() and not rows["resolved"].any()  # no interval: not resolved


def test_aggregation_carries_the_intervals(project: ProjectLocation, study) -> None:
    from sim_consistency.aggregate import collect_consistency, plot_consistency
    from sim_consistency.findings import consistency_findings

    args, _ = study
    assert stage.main([*args, "--n_permutations", "99", "--n_bootstrap", "200"]) == 0
    table = collect_consistency(project)
    assert len(table) == 6  # 3 dataset pairs × 2 methods
    assert table[["p_value", "ci_low", "ci_high"]].notna().all().all()
    close = table[(table["dataset_a"] == "wds/base") & (table["dataset_b"] == "wds/close")]
    assert close["resolved"].tolist() == [True, True]
    assert (table["ci_low"] <= table["consistency"]).all()
    assert (table["consistency"] <= table["ci_high"]).all()
    sentences = consistency_findings(table)
    assert all("2 of 6" not in s and "1 of 3 tested values are resolved" in s for s in sentences)
    assert "95% CI" in sentences[0]
    assert plot_consistency(table, project.plots).stat().st_size > 0
