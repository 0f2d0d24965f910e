"""Units of the combined/ensemble/transfer probes: model sets, class maps, combiners, storage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sim_consistency.config.model_sets import load_model_sets, parse_model_sets
from sim_consistency.errors import ConfigError, DataError
from sim_consistency.probe.combine import combine_features
from sim_consistency.probe.combined_eval import align_rows, ensemble_probabilities
from sim_consistency.probe.stored import (
    read_predictions,
    read_probe_weights,
    softmax,
    write_predictions,
    write_probe_weights,
)
from sim_consistency.probe.transfer import (
    parse_class_map,
    project_scores,
    read_class_map,
    shipped_class_map,
)

KNOWN = {"a": 1, "b": 1, "c": 1}


# -- model sets ------------------------------------------------------------------------------


def test_rep2rep_list_of_lists_is_sorted_deduplicated_and_named_by_ids():
    sets = parse_model_sets([["b", "a"], ["a", "b"], ["c"]], KNOWN)
    assert sets == {"a__b": ("a", "b"), "c": ("c",)}


def test_named_sets_keep_order_and_repeats():
    sets = parse_model_sets({"model_sets": {"self": ["a", "a"], "x-1": ["c", "b"]}}, KNOWN)
    assert sets == {"self": ("a", "a"), "x-1": ("c", "b")}


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"sets": {}}, "expected a list of lists"),
        ([["a"], []], "set #1: expected a non-empty list"),
        ([["a", 3]], "set #0"),
        ({"model_sets": {"bad name": ["a"]}}, "set name 'bad name'"),
        ({"model_sets": {"s": ["a", "bb"]}}, r"set 's': unknown model id 'bb'; did you mean 'b'"),
        ([], "no model set"),
    ],
)
def test_bad_model_sets_are_refused_with_the_culprit_named(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_model_sets(raw, KNOWN)


def test_model_sets_file_errors_name_the_file(tmp_path):
    path = tmp_path / "sets.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=f"--model_sets {path}: not valid JSON"):
        load_model_sets(path, KNOWN)
    with pytest.raises(ConfigError, match="cannot read it"):
        load_model_sets(tmp_path / "absent.json", KNOWN)


# -- class maps ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "n"),
    [("wds/imagenet-a", 200), ("wds/imagenet-r", 200), ("wds/imagenetv2", 1000),
     ("wds/imagenet_sketch", 1000), ("wds/imagenet1k", 1000)],
)  # fmt: skip
def test_shipped_maps_have_the_published_class_counts(dataset, n):
    class_map = shipped_class_map(dataset)
    assert class_map is not None and len(class_map) == n
    flat = [c for labels in class_map for c in labels]
    assert all(len(labels) == 1 for labels in class_map)
    assert flat == sorted(set(flat)) and flat[0] >= 0 and flat[-1] < 1000


def test_shipped_subset_maps_match_the_wnid_lists_at_known_points():
    # Rep2Rep's wnid lists (imagenet_variants.py) checked against the 1000-wnid order:
    # n01498041 (stingray) is ImageNet index 6, n12267677 (acorn) is 988.
    a, r = shipped_class_map("wds/imagenet-a"), shipped_class_map("wds/imagenet-r")
    assert a is not None and r is not None
    assert [c for (c,) in a[:3]] == [6, 11, 13] and a[-1] == (988,)
    assert [c for (c,) in r[:6]] == [1, 2, 4, 6, 8, 9] and r[-1] == (988,)
    assert len({c for (c,) in a} & {c for (c,) in r}) > 0


def test_no_map_is_invented_for_objectnet():
    assert shipped_class_map("wds/objectnet") is None


def test_class_map_files_accept_lists_and_objects_and_refuse_bad_entries(tmp_path):
    assert parse_class_map([3, [1, 2]], "m") == ((3,), (1, 2))
    assert parse_class_map({"map": [0]}, "m") == ((0,),)
    for bad in ([], [-1], [[]], [True], {"labels": [1]}):
        with pytest.raises(ConfigError):
            parse_class_map(bad, "m")
    path = tmp_path / "m.json"
    path.write_text("[1, 2")
    with pytest.raises(ConfigError, match=f"{path}: the class map is not valid JSON"):
        read_class_map(path)


def test_projection_takes_columns_and_the_max_over_grouped_classes():
    scores = np.array([[0.0, 5.0, 1.0, 2.0], [3.0, 0.0, 4.0, -1.0]])
    classes = np.array([10, 11, 12, 13])
    out = project_scores(scores, classes, ((12,), (10, 13), (11, 12)), "m")
    np.testing.assert_array_equal(out, [[1.0, 2.0, 5.0], [4.0, 3.0, 4.0]])
    with pytest.raises(DataError, match="maps to source label"):
        project_scores(scores, classes, ((14,),), "m")


# -- combiners -------------------------------------------------------------------------------


def _features(seed, n=60, m=25, d=7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m, d))


def test_concat_normalises_each_model_then_concatenates():
    (a, a_t), (b, b_t) = _features(0), _features(1, d=3)
    out = combine_features([a * 10, b], [a_t, b_t], "concat")
    assert out.train.shape == (60, 10) and out.dims == (7, 3) and out.n_components is None
    np.testing.assert_allclose(np.linalg.norm(out.train[:, :7], axis=1), 1.0)
    np.testing.assert_allclose(np.linalg.norm(out.test[:, 7:], axis=1), 1.0)


def test_concat_pca_fits_on_train_only_and_keeps_the_variance_asked():
    (a, a_t), (b, b_t) = _features(2), _features(3)
    full = combine_features([a, b], [a_t, b_t], "concat_pca", pca_variance=1.0)
    assert full.n_components == 14 and full.explained_variance == pytest.approx(1.0)
    part = combine_features([a, b], [a_t, b_t], "concat_pca", pca_variance=0.5)
    assert 1 <= part.n_components < 14 and part.explained_variance > 0.5
    # Changing the test rows changes nothing learnt from train.
    other = combine_features([a, b], [a_t * 3 + 1, b_t], "concat_pca", pca_variance=0.5)
    np.testing.assert_allclose(other.train, part.train)
    # The kept components are the standardised train rows' leading principal axes.
    assert np.allclose(np.cov(part.train.T, bias=True), np.diag(part.train.var(axis=0)), atol=1e-10)


def test_concat_pca_of_a_model_with_itself_keeps_the_same_number_of_components():
    a, a_t = _features(4)
    single = combine_features([a], [a_t], "concat_pca")
    double = combine_features([a, a], [a_t, a_t], "concat_pca")
    assert single.n_components == double.n_components
    np.testing.assert_allclose(np.abs(double.train), np.abs(single.train) * np.sqrt(2), atol=1e-9)


def test_combiner_errors():
    a, a_t = _features(5)
    with pytest.raises(ConfigError, match="unknown feature combiner"):
        combine_features([a], [a_t], "sum")
    with pytest.raises(ConfigError, match="pca_variance"):
        combine_features([a], [a_t], "concat_pca", pca_variance=0.0)
    with pytest.raises(DataError, match="different number of rows"):
        combine_features([a, a[:10]], [a_t, a_t], "concat")


# -- stored predictions and ensembles --------------------------------------------------------


def test_predictions_round_trip_and_ensemble_of_identical_members_is_the_member(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(30, 4)).astype(np.float32)
    keys = [f"k{i}" for i in range(30)]
    targets = rng.integers(0, 4, 30) + 5
    path = write_predictions(tmp_path / "p.npz", keys=keys, labels=targets, logits=logits,
                             classes=[5, 6, 7, 8], block="b")  # fmt: skip
    p = read_predictions(path)
    np.testing.assert_array_equal(p.pred, np.array([5, 6, 7, 8])[logits.argmax(1)])
    assert p.block == "b" and p.top1() == float(np.mean(p.pred == targets))
    # A shuffled copy of the same predictions: rows are realigned by key.
    order = rng.permutation(30)
    q = write_predictions(tmp_path / "q.npz", keys=np.asarray(keys)[order],
                          labels=targets[order], logits=logits[order], classes=[5, 6, 7, 8],
                          block="b")  # fmt: skip
    probs, first = ensemble_probabilities([p, read_predictions(q)])
    np.testing.assert_allclose(probs, softmax(logits), rtol=1e-12)
    np.testing.assert_array_equal(first.classes[probs.argmax(1)], p.pred)


def test_ensemble_refuses_members_that_disagree(tmp_path):
    logits = np.zeros((3, 2), np.float32)
    a = write_predictions(tmp_path / "a.npz", keys=["x", "y", "z"], labels=[0, 1, 0],
                          logits=logits, classes=[0, 1], block="b")  # fmt: skip
    b = write_predictions(tmp_path / "b.npz", keys=["x", "y", "w"], labels=[0, 1, 0],
                          logits=logits, classes=[0, 1], block="b")  # fmt: skip
    c = write_predictions(tmp_path / "c.npz", keys=["x", "y", "z"], labels=[1, 1, 0],
                          logits=logits, classes=[0, 1], block="b")  # fmt: skip
    with pytest.raises(DataError, match="rows differ"):
        ensemble_probabilities([read_predictions(a), read_predictions(b)])
    with pytest.raises(DataError, match="different labels"):
        ensemble_probabilities([read_predictions(a), read_predictions(c)])


def test_bad_prediction_and_weight_files_are_named(tmp_path):
    with pytest.raises(DataError, match="no stored test predictions"):
        read_predictions(tmp_path / "none.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, keys=np.array(["a"]), labels=np.array([0]))
    with pytest.raises(DataError, match="missing array"):
        read_predictions(bad)
    junk = tmp_path / "w.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="unreadable probe weights"):
        read_probe_weights(junk)


def test_stored_weights_reproduce_the_scores(tmp_path):
    rng = np.random.default_rng(1)
    W, b = rng.normal(size=(5, 3)), rng.normal(size=3)
    path = write_probe_weights(tmp_path / "w.safetensors", {"blk": (W, b)}, [0, 1, 2])
    probe = read_probe_weights(path)["blk"]
    X = rng.normal(size=(8, 5))
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_allclose(probe.scores(X), Xn @ W + b)
    assert probe.weight.shape == (3, 5) and probe.classes.tolist() == [0, 1, 2]
    meta = json.loads(json.dumps(probe.classes.tolist()))
    assert meta == [0, 1, 2]


def test_align_rows_reorders_by_key():
    order = align_rows(np.array(["b", "a", "c"]), np.array(["a", "b", "c"]), "x")
    assert order.tolist() == [1, 0, 2]
