"""Leave-group-out linear CKA equals the estimator recomputed without the group; points are
bitwise the plain functions'."""

from __future__ import annotations

import numpy as np
import pytest

from sim_consistency.config.similarity import MetricSpec
from sim_consistency.similarity import cka, cka_grid, similarity_matrix
from sim_consistency.uncertainty import (
    cka_grid_ci,
    linear_cka_leave_out,
    linear_group_stats,
    row_groups,
    similarity_matrix_ci,
)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("budget", [1 << 30, 0])  # stacked groups / two passes
def test_leave_out_equals_recomputation(features, unbiased, budget):
    X, Y, _ = features
    groups = row_groups(X.shape[0], 7, seed=3)
    sx = linear_group_stats(X, groups, budget=budget)
    sy = linear_group_stats(Y, groups, budget=budget)
    got = linear_cka_leave_out(sx, sy, unbiased=unbiased, budget=budget)
    ref = [cka(X[groups != g], Y[groups != g], unbiased=unbiased) for g in range(7)]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)


def test_leave_out_of_float32_wide_features_equals_recomputation():
    """d > n, float32 input: still the estimator on the kept rows (Gram space there)."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 50)).astype(np.float32)
    Y = (X @ rng.normal(size=(50, 40)) + rng.normal(size=(30, 40))).astype(np.float32)
    groups = row_groups(30, 6, seed=0)
    got = linear_cka_leave_out(
        linear_group_stats(X, groups), linear_group_stats(Y, groups), unbiased=True
    )
    ref = [cka(X[groups != g], Y[groups != g], unbiased=True, space="gram") for g in range(6)]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
def test_matrix_point_is_bitwise_the_plain_matrix(features, unbiased):
    spec = MetricSpec("cka", sim_kernel="linear", unbiased=unbiased)
    ci = similarity_matrix_ci(features, spec, n_groups=5, seed=1)
    plain = similarity_matrix(features, spec)
    assert np.array_equal(ci.point, plain)
    assert ci.se.shape == (3, 3) and ci.leave_out.shape == (3, 3, 5)
    assert (ci.se[np.triu_indices(3, 1)] > 0).all()
    assert np.array_equal(ci.se, ci.se.T)
    assert ci.groups is not None and np.array_equal(ci.groups, row_groups(53, 5, seed=1))
    # the leave-out values are CKA of the normalised features on the kept rows
    normed = [X / np.linalg.norm(X, axis=1, keepdims=True) for X in features]
    keep = ci.groups != 2
    ref = cka(normed[0][keep], normed[1][keep], unbiased=unbiased)
    assert ci.leave_out[0, 1, 2] == pytest.approx(ref, abs=1e-10)


def test_grid_point_is_bitwise_cka_grid_and_cells_are_exact(features):
    blocks_a, blocks_b = features[:2], features[1:]
    ci = cka_grid_ci(blocks_a, blocks_b, True, n_groups=4, seed=2)
    assert np.array_equal(ci.point, cka_grid(blocks_a, blocks_b, True))
    keep = ci.groups != 1
    ref = cka(blocks_a[0][keep], blocks_b[1][keep], unbiased=True)
    assert ci.leave_out[0, 1, 1] == pytest.approx(ref, abs=1e-10)
    same = cka_grid_ci(blocks_a, blocks_a, n_groups=4)
    assert np.array_equal(same.point, cka_grid(blocks_a, blocks_a))
    assert np.array_equal(same.se, same.se.T)


def test_identical_representations_have_zero_width(features):
    X = features[0]
    ci = similarity_matrix_ci([X, X.copy()], MetricSpec("cka", sim_kernel="linear"), n_groups=5)
    assert ci.se[0, 1] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("unbiased", [False, True])
def test_default_groups_reuse_the_point_pass(unbiased):
    """K = 20, seed 0 are linear CKA's accumulation groups: the interval comes from the plain
    pass's own per-group products (one pass), the point is bitwise the plain matrix and every
    leave-out value is the estimator on the kept rows."""
    from sim_consistency.similarity import accumulation_groups, l2_normalize
    from sim_consistency.uncertainty.similarity import _linear_one_pass, leave_out_matrix

    rng = np.random.default_rng(4)
    shared = rng.normal(size=(2500, 12))  # n > DEFAULT_CHUNK_ROWS (2048)
    feats = [shared @ rng.normal(size=(12, d)) + rng.normal(size=(2500, d)) for d in (9, 14, 6)]
    spec = MetricSpec("cka", sim_kernel="linear", unbiased=unbiased)
    groups = row_groups(2500, 20, seed=0)
    assert np.array_equal(groups, accumulation_groups(2500))
    normed = [l2_normalize(X) for X in feats]
    assert _linear_one_pass(normed, spec, groups, 1 << 30, {}) is not None  # the fused path
    ci = similarity_matrix_ci(feats, spec)
    assert ci.point.tobytes() == similarity_matrix(feats, spec).tobytes()
    two_pass = leave_out_matrix(normed, spec, groups)
    np.testing.assert_allclose(ci.leave_out, two_pass, rtol=0, atol=1e-12)
    for g in (0, 7, 19):
        keep = groups != g
        ref = cka(normed[0][keep], normed[2][keep], unbiased=unbiased)
        assert ci.leave_out[0, 2, g] == pytest.approx(ref, abs=1e-10)
    # another seed: the separate pass, same point bits
    other = similarity_matrix_ci(feats, spec, seed=1)
    assert other.point.tobytes() == ci.point.tobytes()


def test_accumulation_groups_of_small_n_and_chunked_groups():
    """n < 20: min(n, 20) groups (one when n < 2); a group larger than chunk_rows is summed in
    sub-chunks — the result agrees with the contiguous float64 sum to rounding."""
    from sim_consistency.similarity import accumulation_groups
    from sim_consistency.similarity.cka import cross_products, linear_stats

    assert np.array_equal(np.sort(accumulation_groups(7)), np.arange(7))
    assert accumulation_groups(1).tolist() == [0]
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(300, 5)), rng.normal(size=(300, 4))
    sx, sy = linear_stats(X, chunk_rows=4), linear_stats(Y, chunk_rows=4)
    acc, kept = cross_products(sx, sy, keep=True)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    np.testing.assert_allclose(acc, Xc.T @ Yc, rtol=0, atol=1e-12)
    assert kept is not None and kept.shape == (20, 5, 4)
    np.testing.assert_allclose(kept.sum(0), acc, rtol=0, atol=1e-12)


def test_grid_default_groups_reuse_the_point_pass():
    """cka_grid_ci / the layer_cka stage's grid_blocks: one pass with K = 20, seed 0; the grid
    is bitwise cka_grid and the cells' leave-out values equal the separate pass's."""
    from sim_consistency.uncertainty import grid_blocks, grid_leave_out

    rng = np.random.default_rng(6)
    shared = rng.normal(size=(400, 5))
    blocks_a = [shared @ rng.normal(size=(5, d)) + rng.normal(size=(400, d)) for d in (8, 11)]
    blocks_b = [shared @ rng.normal(size=(5, d)) + rng.normal(size=(400, d)) for d in (6, 9, 7)]
    groups = row_groups(400, 20, seed=0)
    assert grid_blocks(blocks_a, groups=groups).one_pass
    for unbiased in (False, True):
        ci = cka_grid_ci(blocks_a, blocks_b, unbiased)
        assert ci.point.tobytes() == cka_grid(blocks_a, blocks_b, unbiased).tobytes()
        sep = grid_leave_out(
            [linear_group_stats(X, groups) for X in blocks_a],
            [linear_group_stats(X, groups) for X in blocks_b],
            unbiased=unbiased,
        )
        np.testing.assert_allclose(ci.leave_out, sep, rtol=0, atol=1e-12)
        same = cka_grid_ci(blocks_a, blocks_a, unbiased)
        assert same.point.tobytes() == cka_grid(blocks_a, blocks_a, unbiased).tobytes()
        assert np.array_equal(same.leave_out, same.leave_out.transpose(1, 0, 2))
