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
