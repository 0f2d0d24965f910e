"""The streamed model×model path equals the pair-by-pair path for every metric (≤ 1e-9)."""

from __future__ import annotations

import numpy as np
import pytest

from sim_consistency.config.similarity import MetricSpec
from sim_consistency.errors import ConfigError
from sim_consistency.features.cache import load_aligned_blocks
from sim_consistency.similarity import similarity_matrix
from sim_consistency.similarity.cka import rbf_stats
from sim_consistency.similarity.streamed import (
    parse_memory_budget,
    rbf_cross_matrix,
    resolve_device,
)

SPECS = [
    MetricSpec("cka", sim_kernel="rbf", unbiased=True, sigma=0.4),
    MetricSpec("cka", sim_kernel="rbf", unbiased=False, sigma=0.4),
    MetricSpec("cka", sim_kernel="rbf", unbiased=True, sigma_median=0.5),
    MetricSpec("cka", sim_kernel="rbf", unbiased=False, sigma_median=1.0),
    # small bandwidths: the sampled bound of the smallest distance is far from it (rescaled),
    # or so far that the kernel could overflow (streamed again with the exact minimum)
    MetricSpec("cka", sim_kernel="rbf", unbiased=True, sigma_median=0.1),
    MetricSpec("cka", sim_kernel="rbf", unbiased=True, sigma=0.05),
    MetricSpec("cka", sim_kernel="rbf", unbiased=False, sigma=0.05),
    MetricSpec("cka", sim_kernel="linear", unbiased=True),
    MetricSpec("cka", sim_kernel="linear", unbiased=False),
    MetricSpec("rsa", rsa_method="correlation", corr_method="spearman"),
    MetricSpec("rsa", rsa_method="cosine", corr_method="pearson"),
    MetricSpec("mknn", k=5),
]


def _random_models(m: int = 5, n: int = 60) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, 16))
    out = [X]
    for i in range(m - 1):
        W = rng.normal(size=(16, 8 + 3 * i))
        out.append(np.tanh(X @ W) + 0.2 * (i + 1) * rng.normal(size=(n, 8 + 3 * i)))
    return out


def _digits_models(similarity_project) -> list[np.ndarray]:
    paths = sorted(similarity_project.location.features.rglob("*.h5"))
    digits = [p for p in paths if "digits" in str(p) and "inverted" not in str(p)]
    assert len(digits) >= 3, paths
    _, _, features = load_aligned_blocks(digits, None)
    return features


def _assert_same(new: np.ndarray, old: np.ndarray) -> None:
    assert new.shape == old.shape
    np.testing.assert_array_equal(np.isnan(new), np.isnan(old))
    both = ~np.isnan(old)
    assert np.all(np.abs(new[both] - old[both]) <= 1e-9)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_streamed_equals_pairwise_random(spec):
    feats = _random_models()
    old = similarity_matrix(feats, spec, streamed=False)
    _assert_same(similarity_matrix(feats, spec), old)
    # a budget far below one row of every model forces tiles of one model and one-row slabs
    _assert_same(similarity_matrix(feats, spec, memory_budget=64), old)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_streamed_equals_pairwise_digits(spec, similarity_project):
    feats = _digits_models(similarity_project)
    old = similarity_matrix(feats, spec, streamed=False)
    _assert_same(similarity_matrix(feats, spec), old)
    _assert_same(similarity_matrix(feats, spec, memory_budget=1000), old)


def test_cross_matrix_is_the_pairwise_inner_product():
    feats = _random_models(4, 40)
    stats = [rbf_stats(X, sigma=2.0) for X in feats]
    C = rbf_cross_matrix(stats, memory_budget=500, slab_rows=7)
    for i in range(4):
        for j in range(4):
            A = np.concatenate([stats[i].kernel_rows(slice(r, r + 1)) for r in range(40)])
            B = np.concatenate([stats[j].kernel_rows(slice(r, r + 1)) for r in range(40)])
            assert abs(C[i, j] - float(np.vdot(A, B))) <= 1e-12 * max(1.0, abs(C[i, j]))


@pytest.mark.parametrize("spec", SPECS[:1] + SPECS[2:3] + SPECS[5:7] + SPECS[9:11], ids=str)
def test_torch_cpu_equals_numpy(spec):
    pytest.importorskip("torch")
    feats = _random_models()
    old = similarity_matrix(feats, spec)
    _assert_same(similarity_matrix(feats, spec, device="torch-cpu"), old)
    _assert_same(similarity_matrix(feats, spec, device="torch-cpu", memory_budget=64), old)


def test_cuda_equals_numpy():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine: the cuda path is tested on torch-cpu")
    feats = _random_models()
    for spec in SPECS[:1] + SPECS[9:10]:
        _assert_same(similarity_matrix(feats, spec, device="cuda"), similarity_matrix(feats, spec))


def test_memory_budget_and_device_errors():
    assert parse_memory_budget("512M") == 512 << 20
    assert parse_memory_budget("2GiB") == 2 << 30
    assert parse_memory_budget(4096) == 4096
    for bad in ("", "-1G", "lots", "0"):
        with pytest.raises(ConfigError, match="memory_budget"):
            parse_memory_budget(bad)
    assert resolve_device("cpu") == "numpy"
    with pytest.raises(ConfigError, match="device"):
        resolve_device("tpu")


@pytest.mark.parametrize("sigma", [0.4, 0.05, 0.005])
def test_sampled_minimum_is_made_exact(sigma, recwarn):
    """n = 700: the sampled pairs miss the closest one; the streamed pass rescales (σ = 0.4,
    0.05) or, where the bound would overflow the kernel (σ = 0.005), streams again."""
    rng = np.random.default_rng(1)
    feats = [rng.normal(size=(700, 10)) for _ in range(3)]
    spec = MetricSpec("cka", sim_kernel="rbf", unbiased=True, sigma=sigma)
    _assert_same(similarity_matrix(feats, spec), similarity_matrix(feats, spec, streamed=False))
    partial = [
        rbf_stats(X / np.linalg.norm(X, axis=1, keepdims=True), sigma=sigma, self_terms=False)
        for X in feats
    ]
    bounds = [s.min_sq_distance for s in partial]
    rbf_cross_matrix(partial, complete=True)
    exact = [rbf_stats(X / np.linalg.norm(X, axis=1, keepdims=True), sigma=sigma) for X in feats]
    assert max(b - s.min_sq_distance for b, s in zip(bounds, partial, strict=True)) > 0
    for s, e in zip(partial, exact, strict=True):
        assert not s.min_is_bound and abs(s.min_sq_distance - e.min_sq_distance) <= 1e-12
        assert abs(s.self_unbiased / e.self_unbiased - 1) <= 1e-9
        np.testing.assert_allclose(s.row_sums, e.row_sums, rtol=1e-9, atol=0)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
