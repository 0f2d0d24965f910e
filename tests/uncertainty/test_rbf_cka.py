"""Leave-group-out RBF CKA from block sums equals recomputation on the kept rows."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from sim_consistency.config.similarity import MetricSpec
from sim_consistency.similarity import cka, rbf_stats, similarity_matrix
from sim_consistency.similarity.cka import _median_of_centred
from sim_consistency.uncertainty import rbf_cka_leave_out, row_groups, similarity_matrix_ci


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("sigma", [3.0, 0.4])
def test_leave_out_equals_recomputation(features, unbiased, sigma):
    groups = row_groups(53, 6, seed=1)
    stats = [rbf_stats(X, sigma=sigma, self_terms=False) for X in features]
    got = rbf_cka_leave_out(stats, groups, unbiased=unbiased, slab_rows=5)
    for a in range(3):
        for b in range(3):
            ref = [
                cka(
                    features[a][groups != g],
                    features[b][groups != g],
                    kernel="rbf",
                    sigma=sigma,
                    unbiased=unbiased,
                )
                for g in range(6)
            ]
            np.testing.assert_allclose(got[a, b], ref, rtol=0, atol=1e-10)


def test_sigma_median_is_held_at_the_full_sample_bandwidth(features):
    X, Y, _ = features
    spec = MetricSpec("cka", sim_kernel="rbf", unbiased=True, sigma_median=0.8)
    ci = similarity_matrix_ci([X, Y], spec, n_groups=5, seed=0, normalize=False)
    assert np.array_equal(ci.point, similarity_matrix([X, Y], spec, normalize=False))
    keep = ci.groups != 3
    sig_x, sig_y = (
        0.8 * np.sqrt(_median_of_centred(Z - Z.mean(0), ((Z - Z.mean(0)) ** 2).sum(1), 64, None))
        for Z in (X, Y)
    )
    # each representation keeps its own full-sample sigma
    from sim_consistency.similarity import rbf_cka_from_stats

    ref = rbf_cka_from_stats(
        rbf_stats(X[keep], sigma=sig_x), rbf_stats(Y[keep], sigma=sig_y), unbiased=True
    )
    assert ci.leave_out[0, 1, 3] == pytest.approx(ref, abs=1e-10)


def test_point_is_bitwise_the_plain_streamed_matrix(features):
    spec = MetricSpec("cka", sim_kernel="rbf", unbiased=False, sigma=0.5)
    ci = similarity_matrix_ci(features, spec, n_groups=4)
    assert np.array_equal(ci.point, similarity_matrix(features, spec))
    assert np.isfinite(ci.se).all()


def test_underflowing_kernel_gives_nan_not_a_number(features):
    X = features[0] * 1e3
    spec = MetricSpec("cka", sim_kernel="rbf", unbiased=True, sigma=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ci = similarity_matrix_ci([X, features[1]], spec, n_groups=4, normalize=False)
    assert np.isnan(ci.point[0, 1]) and np.isnan(ci.se[0, 1])


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("sigma", [0.5, 0.05])
def test_default_groups_read_the_plain_pass_and_equal_recomputation(features, unbiased, sigma):
    """K = 20, seed 0 (the default): the interval comes from the plain streamed pass's own block
    sums — the point is bitwise the plain matrix, the leave-out values are the estimator on the
    kept rows (σ = 0.05: the sampled scale is made exact), and a separate pass agrees."""
    spec = MetricSpec("cka", sim_kernel="rbf", unbiased=unbiased, sigma=sigma)
    ci = similarity_matrix_ci(features, spec)
    assert ci.n_groups == 20
    assert np.array_equal(ci.point, similarity_matrix(features, spec))
    mats = [X / np.linalg.norm(X, axis=1, keepdims=True) for X in features]
    for g in (0, 7, 19):
        keep = ci.groups != g
        for a, b in ((0, 1), (1, 2), (0, 0)):
            ref = cka(mats[a][keep], mats[b][keep], kernel="rbf", sigma=sigma, unbiased=unbiased)
            assert ci.leave_out[a, b, g] == pytest.approx(ref, abs=1e-10)
    separate = rbf_cka_leave_out(
        [rbf_stats(X, sigma=sigma, self_terms=False) for X in mats],
        ci.groups,
        unbiased=unbiased,
        slab_rows=4,
        memory_budget=64,  # one-model tiles
    )
    np.testing.assert_allclose(ci.leave_out, separate, rtol=0, atol=1e-12)


def test_one_pass_on_torch_and_in_tiles_equals_numpy(features):
    pytest.importorskip("torch")
    spec = MetricSpec("cka", sim_kernel="rbf", unbiased=True, sigma_median=0.7)
    ref = similarity_matrix_ci(features, spec)
    for options in ({"device": "torch-cpu"}, {"memory_budget": 64}):
        got = similarity_matrix_ci(features, spec, **options)
        np.testing.assert_allclose(got.point, ref.point, rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.leave_out, ref.leave_out, rtol=0, atol=1e-12)


def test_block_sums_add_up_to_the_cross_matrix_and_row_sums(features):
    from sim_consistency.similarity._arrays import group_bounds
    from sim_consistency.similarity.streamed import rbf_cross_matrix

    groups = np.sort(row_groups(53, 5, seed=2))
    stats = [rbf_stats(X, sigma=1.5, self_terms=False) for X in features]
    C, blocks = rbf_cross_matrix(
        stats, bounds=group_bounds(groups), blocks=True, complete=True, slab_rows=4
    )
    kernels = [np.concatenate([s.kernel_rows(slice(i, i + 1)) for i in range(53)]) for s in stats]
    for a in range(3):
        np.testing.assert_allclose(blocks.R[a].sum(1), stats[a].row_sums, rtol=1e-13)
        for h in range(5):
            np.testing.assert_allclose(
                blocks.R[a][:, h], kernels[a][:, groups == h].sum(1), rtol=1e-12, atol=1e-14
            )
        for b in range(3):
            assert C[a, b] == pytest.approx(float(np.vdot(kernels[a], kernels[b])), rel=1e-13)
            for g, h in ((0, 0), (1, 3), (4, 2)):
                want = float(
                    np.vdot(*(k[groups == g][:, groups == h] for k in (kernels[a], kernels[b])))
                )
                assert blocks.W[a, b, g, h] == pytest.approx(want, rel=1e-12)
