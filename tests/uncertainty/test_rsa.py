"""Leave-group-out RSA: exact recomputation from the prepared RDMs, ranks redone."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from sim_consistency.config.similarity import MetricSpec
from sim_consistency.errors import ConfigError
from sim_consistency.similarity import rsa, similarity_matrix
from sim_consistency.similarity._arrays import DegenerateRepresentationWarning
from sim_consistency.similarity.rsa import rdm_upper
from sim_consistency.uncertainty import (
    rdm_ranks,
    row_groups,
    rsa_leave_out,
    similarity_matrix_ci,
)


@pytest.mark.parametrize("corr", ["spearman", "pearson"])
@pytest.mark.parametrize("rdm", ["correlation", "cosine"])
def test_leave_out_equals_recomputation(features, corr, rdm):
    feats = features[:2] + [np.round(features[2], 0) + 3.0]  # many tied dissimilarities
    groups = row_groups(53, 6, seed=2)
    got = rsa_leave_out([rdm_ranks(X, rdm=rdm, corr=corr) for X in feats], groups)
    for a in range(3):
        for b in range(a, 3):
            ref = [
                rsa(feats[a][groups != g], feats[b][groups != g], rdm=rdm, corr=corr)
                for g in range(6)
            ]
            np.testing.assert_allclose(got[a, b], ref, rtol=0, atol=1e-10)


def test_reranking_equals_rankdata_with_ties():
    X = np.round(np.random.default_rng(3).normal(size=(30, 2)), 1)
    prepared = rdm_ranks(X, rdm="cosine")
    values = np.round(rdm_upper(X, rdm="cosine"), 12)
    assert prepared.tied
    keep = np.random.default_rng(4).random(prepared.length) < 0.7
    z = prepared.standardised(keep)
    r = rankdata(values[keep])
    r = (r - r.mean()) / np.linalg.norm(r - r.mean())
    np.testing.assert_allclose(z, r, rtol=0, atol=1e-13)


def test_point_is_bitwise_the_plain_matrix(features):
    spec = MetricSpec("rsa", rsa_method="correlation", corr_method="spearman")
    ci = similarity_matrix_ci(features, spec, n_groups=5, seed=3)
    assert np.array_equal(ci.point, similarity_matrix(features, spec))
    assert (ci.se[np.triu_indices(3, 1)] > 0).all()


def test_undefined_rdm_gives_nan_unless_its_row_is_left_out(features):
    X = features[0].copy()
    X[4] = 1.0  # zero variance: its correlation-RDM row is NaN
    groups = row_groups(53, 5, seed=0)
    got = rsa_leave_out([rdm_ranks(Z) for Z in (X, features[1])], groups)
    assert np.isfinite(got[0, 1, groups[4]]) and np.isnan(np.delete(got[0, 1], groups[4])).all()


def test_memory_budget_is_checked_with_a_clear_error(features):
    spec = MetricSpec("rsa", rsa_method="correlation", corr_method="spearman")
    with pytest.raises(ConfigError, match="memory budget"):
        similarity_matrix_ci(features, spec, n_groups=5, memory_budget=1000)


def test_mutual_knn_has_no_interval_yet(features):
    with pytest.raises(ConfigError, match="no confidence interval for sim_method 'mknn'"):
        similarity_matrix_ci(features, MetricSpec("mknn", k=3), n_groups=5)


def test_study_scale_is_refused_before_any_ranking():
    """M = 20 RDMs of n = 10,000 rows: the jackknife's working set is named up front, before a
    single RDM is built (each would take ~1 GB)."""
    from sim_consistency.uncertainty.rsa import check_rsa_leave_out_memory, rsa_leave_out_bytes

    need = rsa_leave_out_bytes(20, 10_000, "spearman")
    assert need == 18 * 20 * 49_995_000
    with pytest.raises(ConfigError, match=r"20 RDMs of n=10000 rows \(49,995,000 pairs each\)"):
        check_rsa_leave_out_memory(20, 10_000, "spearman", 2 << 30)
    check_rsa_leave_out_memory(20, 10_000, "spearman", need)  # fits exactly: no error


def test_reranking_without_ties_equals_rankdata(features):
    prepared = rdm_ranks(features[1])
    values = rdm_upper(features[1])
    keep = np.random.default_rng(5).random(prepared.length) < 0.6
    z = prepared.standardised(keep)
    r = rankdata(values[keep])
    np.testing.assert_allclose(z, (r - r.mean()) / np.linalg.norm(r - r.mean()), atol=1e-13)


def test_prepared_ranks_are_compact(features):
    untied = rdm_ranks(features[0])
    assert untied.order.dtype == np.int32 and untied.tie_pos is None and not untied.tied
    assert untied.values is None  # a finite Spearman RDM keeps only its order
    tied = rdm_ranks(np.round(features[2], 0) + 3.0)
    assert tied.tied and tied.tie_pos.size > 0 and tied.tie_run.size == tied.tie_pos.size


def test_a_few_ties_are_averaged_exactly(features):
    """A duplicated sample ties each of its RDM entries with its copy's (runs of two, the
    study-scale case of rare ties): groups that keep both copies, one or none all match
    recomputation on the kept rows."""
    X = features[1].copy()
    X[10] = X[3]  # rows 3 and 10 are one sample twice
    groups = row_groups(53, 6, seed=2)
    assert groups[3] != groups[10]
    prepared = [rdm_ranks(Z) for Z in (X, features[0])]
    assert prepared[0].tied and 0 < prepared[0].tie_pos.size < 200
    got = rsa_leave_out(prepared, groups)
    for g in range(6):
        keep = groups != g
        assert got[0, 1, g] == pytest.approx(rsa(X[keep], features[0][keep]), abs=1e-10), g


@pytest.mark.parametrize("corr", ["spearman", "pearson"])
def test_one_preparation_gives_the_plain_point_and_exact_leave_outs(features, corr):
    """The point and the leave-out values come from one RDM and sort per model: the point is
    bitwise the plain matrix, also with an undefined RDM row (a zero-variance sample)."""
    X = features[0].copy()
    X[4] = 1.0
    feats = [X, features[1], np.round(features[2], 0) + 3.0]  # the last one has ties
    spec = MetricSpec("rsa", rsa_method="correlation", corr_method=corr)
    with pytest.warns(DegenerateRepresentationWarning):
        ci = similarity_matrix_ci(feats, spec, n_groups=6, seed=2, normalize=False)
    with pytest.warns(DegenerateRepresentationWarning):
        plain = similarity_matrix(feats, spec, normalize=False)
    np.testing.assert_array_equal(ci.point, plain)  # NaN where plain is NaN, same bits elsewhere
    g4 = ci.groups[4]
    keep = ci.groups != g4
    for a, b in ((0, 1), (0, 2), (1, 2)):
        ref = rsa(feats[a][keep], feats[b][keep], corr=corr)
        assert ci.leave_out[a, b, g4] == pytest.approx(ref, abs=1e-10)
    assert np.isnan(np.delete(ci.leave_out[0, 1], g4)).all()


def test_tied_runs_lists_the_positions_of_repeated_values():
    from sim_consistency.similarity.rsa import tied_runs

    starts = np.array([True, False, True, True, False, False, True])  # runs 2, 1, 3, 1
    pos, run = tied_runs(starts)
    assert pos.tolist() == [0, 1, 3, 4, 5] and run.tolist() == [0, 0, 1, 1, 1]
    assert tied_runs(np.ones(4, dtype=bool)) is None
