"""Metric slugs are exactly Rep2Rep's folder names; older slugs are migrated, not orphaned."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim_consistency.config.similarity import MetricSpec, parse_similarity_config
from sim_consistency.errors import ConfigError
from sim_consistency.project import ProjectLocation
from sim_consistency.similarity import legacy_metric_slugs, metric_slug
from sim_consistency.similarity.matrix_files import (
    MATRIX_H5,
    read_similarity_matrix,
    write_similarity_matrix,
)
from sim_consistency.stages._similarity_io import similarity_folder


def rep2rep_method_name(
    sim_method: str,
    *,
    kernel: str = "linear",
    unbiased: bool = True,
    sigma: float | None = None,
    rsa_method: str = "correlation",
    corr_method: str = "spearman",
) -> str:
    """Rep2Rep's ``get_name()`` of its similarity classes, re-typed from its public code.

    ``lciernik/similarity_consistency``, ``sim_consistency/tasks/model_similarity.py``:
    ``CKAModelSimilarity.get_name`` and ``RSAModelSimilarity.get_name``; ``sigma`` arrives as
    a float (its CLI's ``--sigma`` has ``type=float``).
    """
    if sim_method == "cka":
        name = f"cka_kernel_{kernel}{'_unbiased' if unbiased else '_biased'}"
        if kernel == "rbf":
            name += f"_sigma_{sigma}"
        return name
    if rsa_method == "correlation":
        return f"rsa_method_{rsa_method}_corr_method_{corr_method}"
    return f"rsa_method_{rsa_method}"


SIGMAS = [0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 0.123456789, 1e-05, 10.0]


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_cka_slugs_equal_rep2rep_names(unbiased, sigma):
    # σ as a JSON number (1 and 1.0 alike) goes through our config parser
    entries = [
        {"sim_method": "cka", "sim_kernel": "linear", "unbiased": unbiased},
        {"sim_method": "cka", "sim_kernel": "rbf", "unbiased": unbiased, "sigma": sigma},
    ]
    linear, rbf = parse_similarity_config(json.loads(json.dumps(entries)))
    assert metric_slug(linear) == rep2rep_method_name("cka", unbiased=unbiased)
    assert metric_slug(rbf) == rep2rep_method_name(
        "cka", kernel="rbf", unbiased=unbiased, sigma=float(sigma)
    )


def test_integer_sigma_reads_like_rep2rep():
    (spec,) = parse_similarity_config([{"sim_method": "cka", "sim_kernel": "rbf", "sigma": 1}])
    assert metric_slug(spec) == "cka_kernel_rbf_unbiased_sigma_1.0"
    assert legacy_metric_slugs(spec) == ["cka_kernel_rbf_unbiased_sigma_1"]
    (spec,) = parse_similarity_config([{"sim_method": "cka", "sim_kernel": "rbf", "sigma": 0.4}])
    assert legacy_metric_slugs(spec) == []  # unchanged name: nothing to migrate


@pytest.mark.parametrize("rsa_method", ["correlation", "cosine"])
@pytest.mark.parametrize("corr_method", ["pearson", "spearman"])
def test_rsa_slugs_equal_rep2rep_names(rsa_method, corr_method):
    (spec,) = parse_similarity_config(
        [{"sim_method": "rsa", "rsa_method": rsa_method, "corr_method": corr_method}]
    )
    assert metric_slug(spec) == rep2rep_method_name(
        "rsa", rsa_method=rsa_method, corr_method=corr_method
    )


def test_rep2rep_configs_slugs(tmp_path):
    """Every entry of Rep2Rep's shipped metric configs maps to its own method name."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "rep2rep"
    for name in ("similarity_metric_config_all.json", "similarity_metric_config_local_global.json"):
        raw = json.loads((root / name).read_text())
        with pytest.warns(UserWarning):
            specs = parse_similarity_config(raw)
        for entry, spec in zip(raw, specs, strict=True):
            expected = rep2rep_method_name(
                entry["sim_method"],
                kernel=entry["sim_kernel"],
                sigma=float(entry["sigma"]),
                rsa_method=entry["rsa_method"],
                corr_method=entry["corr_method"],
            )
            assert metric_slug(spec) == expected


def test_two_cosine_rsa_entries_would_share_a_folder():
    with pytest.raises(ConfigError, match="entries 0 and 1 would both write .*rsa_method_cosine"):
        parse_similarity_config(
            [
                {"sim_method": "rsa", "rsa_method": "cosine", "corr_method": "pearson"},
                {"sim_method": "rsa", "rsa_method": "cosine", "corr_method": "spearman"},
            ]
        )


def _write(location: ProjectLocation, slug: str, spec: MetricSpec) -> np.ndarray:
    folder = location.similarity_dir("wds/digits", slug)
    folder.mkdir(parents=True)
    matrix = np.array([[1.0, 0.25], [0.25, 1.0]])
    meta = {"content_key": "k1", "metric_slug": slug, "metric": spec.to_json()}
    write_similarity_matrix(folder, matrix, ["a", "b"], meta)
    return matrix


def test_legacy_folder_is_renamed_not_orphaned(tmp_path):
    import h5py

    location = ProjectLocation.resolve(tmp_path / "root").create()
    spec = MetricSpec("cka", sim_kernel="rbf", unbiased=True, sigma=1.0)
    matrix = _write(location, "cka_kernel_rbf_unbiased_sigma_1", spec)
    folder = similarity_folder(location, "wds/digits", spec)
    assert folder.name == "cka_kernel_rbf_unbiased_sigma_1.0"
    assert not location.similarity_dir("wds/digits", "cka_kernel_rbf_unbiased_sigma_1").exists()
    np.testing.assert_array_equal(read_similarity_matrix(folder).to_numpy(), matrix)
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["metric_slug"] == folder.name and meta["content_key"] == "k1"
    with h5py.File(folder / MATRIX_H5, "r") as f:
        assert f.attrs["metric_slug"] == folder.name


def test_legacy_cosine_folder_of_another_corr_method_is_left_alone(tmp_path):
    location = ProjectLocation.resolve(tmp_path / "root").create()
    pearson = MetricSpec("rsa", rsa_method="cosine", corr_method="pearson")
    spearman = MetricSpec("rsa", rsa_method="cosine", corr_method="spearman")
    _write(location, "rsa_method_cosine_corr_method_pearson", pearson)
    folder = similarity_folder(location, "wds/digits", spearman)
    assert not folder.exists()  # nothing of spearman's to migrate: it is computed anew
    assert location.similarity_dir("wds/digits", "rsa_method_cosine_corr_method_pearson").exists()
    folder = similarity_folder(location, "wds/digits", pearson)
    assert folder.name == "rsa_method_cosine" and (folder / "metadata.json").is_file()
