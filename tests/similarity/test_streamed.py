"""The streamed model×model path equals the pair-by-pair path for every metric (≤ 1e-9)."""

from __future__ import annotations

import warnings

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


RSA_SPECS = [s for s in SPECS if s.sim_method == "rsa"] + [
    MetricSpec("rsa", rsa_method="cosine", corr_method="spearman"),
    MetricSpec("rsa", rsa_method="correlation", corr_method="pearson"),
]


def _tied_models(m: int = 5, n: int = 200) -> list[np.ndarray]:
    """Coarsely rounded features (many tied dissimilarities) and one constant model."""
    rng = np.random.default_rng(11)
    out = [np.round(rng.normal(size=(n, 8)), 0) for _ in range(m - 1)]
    for X in out:
        X[:, 0] = np.arange(n) % 3  # no constant row (the correlation RDM stays defined)
    out.insert(2, np.ones((n, 3)))  # constant rows: NaN RDM, NaN row and column
    return out


@pytest.mark.parametrize("spec", RSA_SPECS, ids=str)
@pytest.mark.parametrize("device", ["cpu", "torch-cpu"])
def test_rsa_spilled_and_tiled_equals_pairwise(spec, device, tmp_path):
    """A budget far below the M ranked triangles spills them to a scratch file under the given
    folder (removed afterwards) and tiles the M×M product: same matrix as pair by pair."""
    from sim_consistency.similarity import DegenerateRepresentationWarning, l2_normalize
    from sim_consistency.similarity.streamed import rsa_matrix

    for feats in (_random_models(6, 200), _tied_models()):
        has_constant = any(np.ptp(X) == 0 for X in feats)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateRepresentationWarning)
            old = similarity_matrix(feats, spec, streamed=False)
        spilled: list = []
        budget = 2 * 16 * 4096  # store ≫ budget/2; two one-model slabs of 4,096 entries: tiles
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            new = rsa_matrix(
                [l2_normalize(X) for X in feats],
                rdm=spec.rsa_method,
                corr=spec.corr_method,
                memory_budget=budget,
                device=resolve_device(device),
                scratch_dir=tmp_path / "scratch",
                on_spill=spilled.append,
            )
            # in memory (no spill) and through similarity_matrix: the same matrix
            _assert_same(similarity_matrix(feats, spec, device=device), old)
        _assert_same(new, old)
        assert has_constant == any(
            issubclass(w.category, DegenerateRepresentationWarning) for w in caught
        )
        assert spilled and spilled[0].parent == tmp_path / "scratch"
        assert not spilled[0].exists()  # cleaned up


def test_rsa_plan_tiles_models_under_a_tiny_budget():
    from sim_consistency.similarity.streamed import _plan

    assert _plan(20, 2, 2 << 30, 1 << 20, 4096) == (20, 1 << 20)
    tile, rows = _plan(20, 2, 2 * 3 * 16 * 4096, 1 << 20, 4096)
    assert rows == 4096 and tile == 3  # two tiles of three models, 4,096 entries each
    assert _plan(20, 2, 1, 1 << 20, 4096) == (1, 4096)  # the floor: one model, one min slab


def test_rsa_scratch_write_failure_names_the_file(tmp_path):
    """A write that fails (here: over the process's file-size limit) is a one-line error naming
    the scratch file, which is removed."""
    import subprocess
    import sys

    code = f"""
import resource, signal, numpy as np
from sim_consistency.errors import OutputWriteError
from sim_consistency.similarity.streamed import rsa_matrix
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
rng = np.random.default_rng(0)
try:
    rsa_matrix([rng.normal(size=(300, 5)) for _ in range(3)], memory_budget=1000,
               scratch_dir={str(tmp_path)!r})
except OutputWriteError as e:
    print("ERR", e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ERR" in out.stdout and "RSA scratch file" in out.stdout, out.stdout + out.stderr
    assert str(tmp_path) in out.stdout and ".scratch" in out.stdout
    assert not list(tmp_path.glob("*.scratch"))
