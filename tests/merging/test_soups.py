"""Uniform, weighted, greedy and pruned soups: algebra on real timm models, hand-checked cases."""

from __future__ import annotations

import random

import pytest
import timm
import torch

from sim_consistency.errors import MergeError
from sim_consistency.merging import greedy_soup, pruned_soup, uniform_soup
from tests.merging.conftest import perturbed


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_soup_of_identical_models_is_the_model(vit_sd, resnet_sd):
    for sd in (vit_sd, resnet_sd):
        assert _equal(uniform_soup([sd, sd, sd]), sd)


def test_streaming_soup_equals_batch_mean(convnext_sd):
    ingredients = [perturbed(convnext_sd, seed) for seed in range(4)]
    streamed = uniform_soup((f"ft{i}", sd) for i, sd in enumerate(ingredients))
    for key, value in convnext_sd.items():
        if value.is_floating_point():
            batch = torch.stack([sd[key].double() for sd in ingredients]).mean(0).float()
            torch.testing.assert_close(streamed[key], batch, rtol=0, atol=1e-7)
        assert streamed[key].dtype == value.dtype and streamed[key].shape == value.shape


def test_weighted_soup_normalises_weights(vit_sd):
    a, b = perturbed(vit_sd, 1), perturbed(vit_sd, 2)
    soup = uniform_soup([a, b], weights=[3.0, 1.0])
    key = "blocks.0.attn.qkv.weight"
    torch.testing.assert_close(soup[key], 0.75 * a[key] + 0.25 * b[key])
    assert _equal(uniform_soup([a, b], weights=[2, 2]), uniform_soup([a, b]))


def test_integer_buffers_are_never_averaged(resnet_sd):
    a = dict(resnet_sd, **{"bn1.num_batches_tracked": torch.tensor(10)})
    b = dict(resnet_sd, **{"bn1.num_batches_tracked": torch.tensor(31)})
    soup = uniform_soup({"a": a, "b": b})
    assert soup["bn1.num_batches_tracked"].item() == 10
    assert soup["bn1.num_batches_tracked"].dtype == torch.int64


def test_soup_errors_name_the_ingredient_and_tensor(vit_sd, convnext_sd):
    with pytest.raises(MergeError, match="empty"):
        uniform_soup([])
    with pytest.raises(MergeError, match="'cnx' has different tensors than 'vit'"):
        uniform_soup({"vit": vit_sd, "cnx": convnext_sd})
    bad = dict(vit_sd, **{"head.weight": torch.zeros(5, vit_sd["head.weight"].shape[1])})
    with pytest.raises(MergeError, match="tensor 'head.weight' of 'small_head' has shape"):
        uniform_soup({"vit": vit_sd, "small_head": bad})
    with pytest.raises(MergeError, match="2 ingredients but 3 weights"):
        uniform_soup([vit_sd, vit_sd], weights=[1, 2, 3])


# -- greedy / pruned: hand-checked on scalar "models" -----------------------------------------


def _scalar(value: float) -> dict:
    return {"w": torch.tensor([value], dtype=torch.float64)}


def _closeness(target: float):
    """Held-out 'score': minus the distance of the weight to ``target`` (higher is better)."""
    return lambda sd: -abs(float(sd["w"]) - target)


def test_greedy_hand_checked():
    # target 1.0; individual scores: a=-0 (best), b=-1, c=-0.5, d=-3
    candidates = {"b": _scalar(2.0), "a": _scalar(1.0), "c": _scalar(0.5), "d": _scalar(4.0)}
    soup, log = greedy_soup(candidates, _closeness(1.0))
    # rank: a, c, b, d. {a,c}=0.75 (-0.25 < 0: reject); {a,b}=1.5 (reject); {a,d} (reject)
    assert [e["id"] for e in log] == ["a", "c", "b", "d"]
    assert [e["accepted"] for e in log] == [True, False, False, False]
    assert float(soup["w"]) == 1.0
    # target 1.25: a=-0.25 best; {a,b}=1.5 -> -0.25 equal: accepted with '>=', not with '>'
    candidates = {"a": _scalar(1.0), "b": _scalar(2.0), "c": _scalar(3.0)}
    soup, log = greedy_soup(candidates, _closeness(1.25), accept=">=")
    assert [(e["id"], e["accepted"]) for e in log] == [("a", True), ("b", True), ("c", False)]
    assert log[1]["score"] == pytest.approx(-0.25)
    assert float(soup["w"]) == 1.5
    soup, log = greedy_soup(candidates, _closeness(1.25), accept=">")
    assert [e["accepted"] for e in log] == [True, False, False]
    assert float(soup["w"]) == 1.0


def test_greedy_random_order_is_seeded():
    candidates = {name: _scalar(float(i)) for i, name in enumerate("abcdef")}
    orders = {
        tuple(e["id"] for e in greedy_soup(candidates, _closeness(0), order="random", seed=s)[1])
        for s in (0, 0, 1)
    }
    assert len(orders) == 2  # seed 0 twice -> same order; seed 1 -> another


def test_pruned_hand_checked():
    # target 1.0; uniform of {0, 1, 2, 9} = 3 (score -2). b (score 0) is the best: kept, never
    # tried. Ranking best first: b, a, c (tie, listed order), d; tried in reverse: d, c, a.
    candidates = {"a": _scalar(0.0), "b": _scalar(1.0), "c": _scalar(2.0), "d": _scalar(9.0)}
    soup, log = pruned_soup(candidates, _closeness(1.0))
    assert log[0]["id"] is None and log[0]["score"] == pytest.approx(-2.0)
    assert log[1]["id"] == "b" and log[1]["removed"] is False and "never" in log[1]["note"]
    assert [(e["id"], e["removed"]) for e in log[2:]] == [("d", True), ("c", False), ("a", False)]
    # without d: {0,1,2} = 1 (score 0); then without c: {0,1} = 0.5, without a: {1,2} = 1.5
    assert float(soup["w"]) == pytest.approx(1.0)


def test_pruned_keeps_last_ingredient():
    soup, log = pruned_soup({"a": _scalar(1.0)}, _closeness(5.0))
    assert float(soup["w"]) == 1.0 and log[-1]["removed"] is False


def _lookup(table: dict[float, float]):
    """Held-out 'score' of a scalar soup looked up by its weight (a constructed evaluator)."""
    return lambda sd: table[round(float(sd["w"]), 9)]


def test_pruned_never_removes_the_best_candidate():
    """Removing the best model c would raise the soup's score; Sobral et al.'s recipe never
    tries it, so the soup keeps c (the old worst-first loop over all removed it)."""
    candidates = {"a": _scalar(0.0), "b": _scalar(1.0), "c": _scalar(3.0)}
    scores = {0.0: 0.5, 1.0: 0.6, 3.0: 0.9}  # individual: c is the best
    scores |= {round(4 / 3, 9): 0.7, 2.0: 0.6, 1.5: 0.65, 0.5: 0.95}  # soups
    soup, log = pruned_soup(candidates, _lookup(scores))
    assert float(soup["w"]) == pytest.approx(4 / 3)  # nothing removed: a and b both hurt
    assert [e["id"] for e in log[1:]] == ["c", "a", "b"]
    assert all(e["removed"] is False for e in log[1:])


def _main_py_greedy(candidates: dict, evaluate) -> list[str]:
    """model-soups ``main.py`` greedy soup, written out: stable ascending sort of the individual
    scores, reversed; the first is the soup; each other added if the soup score rises (``>``)."""
    individual = {name: evaluate(sd) for name, sd in candidates.items()}
    ranked = [name for name, _ in sorted(individual.items(), key=lambda kv: kv[1])][::-1]
    ingredients, best = [ranked[0]], individual[ranked[0]]
    for name in ranked[1:]:
        score = evaluate(uniform_soup([candidates[i] for i in [*ingredients, name]]))
        if score > best:
            ingredients, best = [*ingredients, name], score
    return ingredients


def _make_soup_pruned(candidates: dict, evaluate) -> list[str]:
    """Sobral et al.'s ``make_soup(method=PRUNED, strategy=SORTED)``, written out: rank by
    ``sorted(reverse=True)``, keep the first, try removing the others in reverse (``>=``)."""
    individual = {name: evaluate(sd) for name, sd in candidates.items()}
    ranked = [name for name, _ in sorted(individual.items(), key=lambda kv: kv[1], reverse=True)]
    kept = list(ranked)
    current = evaluate(uniform_soup([candidates[i] for i in kept]))
    for name in reversed(ranked[1:]):
        trial = [i for i in kept if i != name]
        score = evaluate(uniform_soup([candidates[i] for i in trial]))
        if score >= current:
            kept, current = trial, score
    return kept


def _tied_instances(n_instances: int = 40):
    """Random scalar candidates whose coarse scores tie often (the cases where orders matter)."""
    rng = random.Random(0)
    for _ in range(n_instances):
        values = [rng.choice([-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]) for _ in range(5)]
        candidates = {f"m{i}": _scalar(v) for i, v in enumerate(values)}
        target = rng.choice([0.0, 0.5, 1.0])
        yield candidates, lambda sd, t=target: -round(abs(float(sd["w"]) - t))


def test_greedy_strict_accept_equals_model_soups_main_py_on_ties():
    differs_from_listed_order = 0
    for candidates, evaluate in _tied_instances():
        soup, log = greedy_soup(candidates, evaluate, accept=">")
        expected = _main_py_greedy(candidates, evaluate)
        assert [e["id"] for e in log if e["accepted"]] == expected
        assert _equal(soup, uniform_soup([candidates[i] for i in expected]))
        listed = sorted(candidates, key=lambda i: -evaluate(candidates[i]))  # old tie order
        differs_from_listed_order += [e["id"] for e in log] != listed
    assert differs_from_listed_order > 0  # the instances do exercise the tie order


def test_greedy_strict_accept_tries_equal_scores_later_listed_first():
    candidates = {"a": _scalar(0.0), "b": _scalar(2.0), "c": _scalar(1.0)}  # a, b tie at -1
    _, log = greedy_soup(candidates, _closeness(1.0), accept=">")
    assert [e["id"] for e in log] == ["c", "b", "a"]
    _, log = greedy_soup(candidates, _closeness(1.0), accept=">=")  # Recipe 1: listed order
    assert [e["id"] for e in log] == ["c", "a", "b"]


def test_pruned_equals_sobral_make_soup_on_ties():
    for candidates, evaluate in _tied_instances():
        soup, _ = pruned_soup(candidates, evaluate)
        expected = _make_soup_pruned(candidates, evaluate)
        assert _equal(soup, uniform_soup([candidates[i] for i in expected]))


def test_greedy_random_starts_from_the_best_candidate():
    candidates = {name: _scalar(float(i)) for i, name in enumerate("abcdef")}  # d is the best
    firsts, rests = set(), set()
    for seed in range(5):
        _, log = greedy_soup(candidates, _closeness(3.0), order="random", seed=seed)
        firsts.add(log[0]["id"])
        rests.add(tuple(e["id"] for e in log[1:]))
    assert firsts == {"d"}
    assert len(rests) > 1  # the others are shuffled


# -- greedy on a real model with a real accuracy ----------------------------------------------


@pytest.fixture(scope="module")
def vit_eval(vit_sd):
    model = timm.create_model("test_vit", pretrained=False, num_classes=10).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 160, 160, generator=g)
    model.load_state_dict(vit_sd)
    with torch.no_grad():
        y = model(x).argmax(1)

    def evaluate(sd):
        model.load_state_dict(sd)
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean())

    return evaluate


@pytest.mark.slow
def test_greedy_real_model_properties(vit_sd, vit_eval):
    candidates = {f"ft{s}": perturbed(vit_sd, s, scale=0.05 * (s + 1)) for s in range(4)}
    soup, log = greedy_soup(candidates, vit_eval)
    best = max(e["individual_score"] for e in log)
    assert vit_eval(soup) >= best
    accepted = [e["id"] for e in log if e["accepted"]]
    assert _equal(soup, uniform_soup({i: candidates[i] for i in accepted}))
    scores = [e["individual_score"] for e in log]
    assert scores[0] == best
