"""The similarity config loader and the metric slugs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim_consistency.config.similarity import MetricSpec, load_similarity_config
from sim_consistency.errors import ConfigError, MissingInputError
from sim_consistency.similarity import SIMILARITY_METRICS, metric_slug

REPO = Path(__file__).resolve().parents[2]


def test_shipped_configs_load_and_slugs_match_design():
    slugs = {
        metric_slug(s) for s in load_similarity_config(REPO / "configs/similarity/default.json")
    }
    assert {
        "cka_kernel_linear_unbiased",
        "cka_kernel_linear_biased",
        "cka_kernel_rbf_unbiased_sigma_0.4",
        "rsa_method_correlation_corr_method_spearman",
        "mknn_k_10",
    } <= slugs
    for path in (REPO / "configs/similarity").glob("*.json"):
        for spec in load_similarity_config(path):
            assert spec.sim_method in SIMILARITY_METRICS


def test_every_problem_reported_naming_file_and_entry(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            [
                {"sim_method": "cka", "sim_kernel": "rbf", "unbiased": True},
                {"sim_method": "rsa", "corr_method": "kendal"},
                {"sim_method": "mknn", "k": 0, "sigma": 0.4},
                {"sim_method": "cca"},
                {"sim_method": "cka", "unbaised": True},
            ]
        )
    )
    with pytest.raises(ConfigError) as err:
        load_similarity_config(path)
    msg = str(err.value)
    assert f"{path}: entry 0: the rbf kernel needs exactly one of 'sigma'" in msg
    assert "entry 1: unknown corr_method 'kendal'. Valid: pearson, spearman." in msg
    assert "sigma" not in msg.split("entry 2")[1].split("entry 3")[0]  # ignored, not an error
    assert "entry 3: unknown sim_method 'cca'; did you mean 'cka'? Valid: cka, rsa, mknn." in msg
    assert "entry 4: unknown key 'unbaised'; did you mean 'unbiased'?" in msg


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(MissingInputError):
        load_similarity_config(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_similarity_config(tmp_path / "x.json")


def test_a_bare_name_is_a_shipped_config(tmp_path, monkeypatch):
    """``--similarity_config default`` (the stages' help examples) reads the shipped file."""
    from sim_consistency.config.shipped import shipped_config, shipped_names

    assert {"default", "local_global"} <= set(shipped_names("similarity"))
    monkeypatch.chdir(tmp_path)  # no ./configs: the name resolves through the package
    for name in shipped_names("similarity"):
        by_name = load_similarity_config(name)
        assert by_name == load_similarity_config(shipped_config("similarity", name))
        assert by_name == load_similarity_config(REPO / f"configs/similarity/{name}.json")
    # an unknown name lists the shipped ones; a path or a .json name is never a shipped name
    with pytest.raises(MissingInputError, match=r"'defualt'.*Shipped: default, local_global"):
        load_similarity_config("defualt")
    for value in ("default.json", "configs/similarity/defualt.json"):
        with pytest.raises(MissingInputError, match="similarity config not found"):
            load_similarity_config(value)
    # an existing file of that name wins over the shipped config
    (tmp_path / "default").write_text(json.dumps([{"sim_method": "mknn", "k": 3}]))
    assert [metric_slug(s) for s in load_similarity_config("default")] == ["mknn_k_3"]


def test_a_bare_name_works_on_the_command_line(similarity_project, tmp_path):
    """The stages take the name as their help examples give it."""
    from sim_consistency.stages import distance_matrix_computation

    project = similarity_project.copy(tmp_path / "root")
    code = distance_matrix_computation.main(
        [
            "--project_root", str(project.location.root),
            "--models_config", str(project.models_config),
            "--datasets", "wds/digits", "--model_key", "vit_a", "cnx",
            "--similarity_config", "local_global",
        ]
    )  # fmt: skip
    assert code == 0
    folders = sorted(p.name for p in project.location.model_similarities.glob("wds_digits/*"))
    assert folders == sorted(
        metric_slug(s)
        for s in load_similarity_config(REPO / "configs/similarity/local_global.json")
    )
    assert distance_matrix_computation.main(
        ["--project_root", str(project.location.root), "--models_config",
         str(project.models_config), "--datasets", "wds/digits", "--similarity_config", "nope"]
    ) == 2  # fmt: skip


def test_slugs():
    assert metric_slug(MetricSpec("cka", sim_kernel="rbf", unbiased=False, sigma_median=0.5)) == (
        "cka_kernel_rbf_biased_sigma_median_0.5"
    )
    assert metric_slug(MetricSpec("rsa", rsa_method="cosine", corr_method="pearson")) == (
        "rsa_method_cosine"  # Rep2Rep's name (tests/similarity/test_rep2rep_slugs.py)
    )


REP2REP_FIXTURES = REPO / "tests" / "fixtures" / "rep2rep"


@pytest.mark.parametrize(
    "name", ["similarity_metric_config_all.json", "similarity_metric_config_local_global.json"]
)
def test_rep2rep_similarity_configs_load_unchanged(name):
    path = REP2REP_FIXTURES / name
    with pytest.warns(UserWarning, match="ignored keys that do not apply") as notes:
        specs = load_similarity_config(path)
    assert "entry 0: corr_method, rsa_method, sigma" in str(notes[0].message)
    raw = json.loads(path.read_text())
    assert len(specs) == len(raw)
    for entry, spec in zip(raw, specs, strict=True):
        if entry["sim_method"] == "cka":
            assert spec.unbiased is True  # Rep2Rep's default without --biased_cka
            assert spec.sigma == (entry["sigma"] if entry["sim_kernel"] == "rbf" else None)
    slugs = [metric_slug(s) for s in specs]
    assert slugs[0] == "cka_kernel_linear_unbiased"  # Rep2Rep's method key
    assert all(s in REP2REP_METHOD_KEYS for s in slugs)


REP2REP_METHOD_KEYS = {
    "cka_kernel_linear_unbiased",
    "cka_kernel_linear_biased",
    "cka_kernel_rbf_unbiased_sigma_0.2",
    "cka_kernel_rbf_unbiased_sigma_0.4",
    "cka_kernel_rbf_unbiased_sigma_0.6",
    "cka_kernel_rbf_unbiased_sigma_0.8",
    "rsa_method_correlation_corr_method_pearson",
    "rsa_method_correlation_corr_method_spearman",
}


def test_biased_cka_flag_applies_to_entries_without_unbiased(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(
        json.dumps(
            [
                {"sim_method": "cka", "sim_kernel": "linear"},
                {"sim_method": "cka", "sim_kernel": "rbf", "sigma": 0.4, "unbiased": True},
            ]
        )
    )
    default = load_similarity_config(path)
    biased = load_similarity_config(path, biased_cka=True)
    assert [s.unbiased for s in default] == [True, True]
    assert [s.unbiased for s in biased] == [False, True]  # explicit values win
    assert metric_slug(biased[0]) == "cka_kernel_linear_biased"
