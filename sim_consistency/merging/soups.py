"""Model soups: uniform / weighted, greedy and pruned averages of fine-tuned weights.

* Uniform and weighted soups — Wortsman et al., "Model soups: averaging weights of multiple
  fine-tuned models improves accuracy without increasing inference time", ICML 2022, Eq. 1.
* Greedy soup — same paper, Recipe 1 (``GreedySoup``). ``accept=">="`` is the paper's rule
  (ties in score ranked in listed order); ``accept=">"`` is the model-soups repository's
  ``main.py``, reproduced with its ranking: a stable ascending sort by individual score, then
  reversed, so candidates with equal scores are tried later-listed first. ``order="random"``
  is Sobral et al.'s current "greedy random": the best candidate is the first ingredient and
  only the others are shuffled (their older code started from a random model).
* Pruned soup — Sobral et al., "ModelSoup: benefits and limitations of model soups"
  (Polytechnique Montréal, 2022), ``make_soup(method=PRUNED, strategy=SORTED)``: start from
  the uniform soup of every candidate, keep the best individual candidate, and try to remove
  each other one, worst first, while held-out accuracy does not drop. The best candidate is
  never a removal candidate.

Conventions (see :mod:`sim_consistency.merging.state`): floating-point tensors are averaged in
float64 and cast back; integer buffers (``num_batches_tracked``) are copied from the first
ingredient, never averaged. BatchNorm running statistics are floating point and therefore
averaged like weights; :mod:`~sim_consistency.merging.batchnorm` offers the other policies.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import torch

from sim_consistency.errors import MergeError
from sim_consistency.merging.state import StateDict, check_compatible, is_mergeable

__all__ = ["uniform_soup", "greedy_soup", "pruned_soup", "SoupAccumulator"]

Evaluate = Callable[[Mapping[str, torch.Tensor]], float]


class SoupAccumulator:
    """Running (weighted) sum of state dicts: one ingredient in memory beyond the accumulator.

    ``add(sd, w)`` adds ``w · sd`` in float64; ``mean()`` returns ``Σ w_i sd_i / Σ w_i`` cast to
    the ingredients' dtypes, integer buffers taken from the first ingredient added.
    """

    def __init__(self, *, where: str = "soup") -> None:
        self.where = where
        self._sum: dict[str, torch.Tensor] = {}
        self._first: StateDict | None = None
        self._first_name = ""
        self.total_weight = 0.0
        self.n_added = 0

    def add(
        self, state_dict: Mapping[str, torch.Tensor], weight: float = 1.0, *, name: str = ""
    ) -> None:
        """Add ``weight · state_dict`` (checked against the first ingredient)."""
        name = name or f"ingredient #{self.n_added}"
        if self._first is None:
            self._first = {
                k: v.detach().clone() for k, v in state_dict.items() if not is_mergeable(v)
            }
            self._meta = {k: (v.dtype, tuple(v.shape)) for k, v in state_dict.items()}
            self._reference = {
                k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in state_dict.items()
            }
            self._first_name = name
            self._sum = {
                k: v.detach().to(torch.float64) * weight
                for k, v in state_dict.items()
                if is_mergeable(v)
            }
        else:
            check_compatible(
                self._reference,
                state_dict,
                where=self.where,
                reference_name=self._first_name,
                other_name=name,
            )
            for key, acc in self._sum.items():
                # Mixed-dtype in-place add: cast element by element, no float64 temporary.
                acc.add_(state_dict[key].detach(), alpha=weight)
        self.total_weight += weight
        self.n_added += 1

    def mean(
        self, extra: Mapping[str, torch.Tensor] | None = None, extra_weight: float = 1.0
    ) -> StateDict:
        """Return the weighted mean (optionally with ``extra`` tentatively added)."""
        if self._first is None:
            raise MergeError(f"{self.where}: no ingredients; a soup needs at least one.")
        total = self.total_weight + (extra_weight if extra is not None else 0.0)
        if not math.isfinite(total) or abs(total) < 1e-12:
            raise MergeError(
                f"{self.where}: the ingredient weights sum to {total}; they must sum to a "
                "non-zero finite number."
            )
        out: StateDict = {}
        for key, (dtype, _shape) in self._meta.items():
            if key in self._sum:
                value = self._sum[key]
                if extra is not None:
                    value = value + extra[key].detach().to(torch.float64) * extra_weight
                out[key] = (value / total).to(dtype)
            else:
                out[key] = self._first[key].clone()
        return out


def _named(state_dicts: Mapping[str, Mapping] | Iterable) -> Iterator[tuple[str, Mapping]]:
    """``(name, state_dict)`` pairs from a mapping, state dicts, or ``(name, sd)`` pairs.

    Holds no reference to an item once it is yielded, so a generator source keeps at most one
    ingredient alive.
    """
    if isinstance(state_dicts, Mapping):
        yield from state_dicts.items()
        return
    for i, item in enumerate(state_dicts):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            pair = item
        else:
            pair = (f"ingredient #{i}", item)
        del item
        yield pair
        del pair


def uniform_soup(
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]] | Iterable[Mapping[str, torch.Tensor]],
    weights: Sequence[float] | None = None,
) -> StateDict:
    """Return the (weighted) average of ``state_dicts`` (Wortsman et al. 2022, Eq. 1).

    Streaming: ``state_dicts`` may be a generator that loads one ingredient at a time; only the
    float64 accumulator and the current ingredient are in memory.

    Args:
        state_dicts: ``{id: state_dict}`` (ids name errors), an iterable of state dicts, or
            an iterable of ``(id, state_dict)`` pairs (e.g. a generator loading each in turn).
        weights: one weight per ingredient; the result is ``Σ w_i θ_i / Σ w_i`` (weights are
            normalised by their sum). ``None``: uniform.

    Returns:
        The soup; float tensors in the ingredients' dtype, integer buffers from the first.

    Raises:
        MergeError: no ingredients, a weight count that does not match, ingredients of
            different architectures (naming the ingredient and tensor), or weights summing to 0.
    """
    acc = SoupAccumulator(where="uniform_soup" if weights is None else "weighted soup")
    weight_list = None if weights is None else [float(w) for w in weights]
    for i, (name, state_dict) in enumerate(_named(state_dicts)):
        if weight_list is not None and i >= len(weight_list):
            raise MergeError(
                f"{acc.where}: more ingredients than weights (got {len(weight_list)} weights)."
            )
        acc.add(state_dict, 1.0 if weight_list is None else weight_list[i], name=name)
        del state_dict  # before the next ingredient is loaded: one in memory at a time
    if acc.n_added == 0:
        raise MergeError(f"{acc.where}: the ingredient list is empty; pass at least one.")
    if weight_list is not None and len(weight_list) != acc.n_added:
        raise MergeError(
            f"{acc.where}: {acc.n_added} ingredients but {len(weight_list)} weights; give one "
            "weight per ingredient."
        )
    return acc.mean()


def _check_candidates(candidates: Mapping[str, Mapping], where: str) -> None:
    if not candidates:
        raise MergeError(f"{where}: the candidate list is empty; pass at least one.")
    items = list(candidates.items())
    for name, sd in items[1:]:
        check_compatible(items[0][1], sd, where=where, reference_name=items[0][0], other_name=name)


def _best_first(scores: dict[str, float], *, later_listed_first: bool = False) -> list[str]:
    """Candidate ids by decreasing score (stable sorts, never a seeded shuffle).

    Ties keep their listed order (``sorted(..., reverse=True)``, as Sobral et al.'s
    ``make_soup``), or with ``later_listed_first`` the model-soups ``main.py`` order: a stable
    ascending sort, then reversed.
    """
    ids = list(scores)
    if later_listed_first:
        return sorted(ids, key=lambda i: scores[i])[::-1]
    return sorted(ids, key=lambda i: scores[i], reverse=True)


def greedy_soup(
    candidates: Mapping[str, Mapping[str, torch.Tensor]],
    evaluate: Evaluate,
    accept: Literal[">=", ">"] = ">=",
    order: Literal["sorted", "random"] = "sorted",
    seed: int = 0,
) -> tuple[StateDict, list[dict[str, Any]]]:
    """Return the greedy soup and its decision log (Wortsman et al. 2022, Recipe 1).

    Every candidate is scored alone and the soup starts from the best one. With
    ``order="sorted"`` the others are tried once each by decreasing score; a candidate is added
    if the held-out score of the uniform soup of the current ingredients plus it is ``>=`` (the
    paper's Recipe 1, default; equal scores tried in listed order) or ``>`` (the model-soups
    repository's ``main.py``, whose order this reproduces: equal scores tried later-listed
    first, the best too) the current soup's score. ``order="random"`` reproduces Sobral et
    al.'s current "greedy random": the best candidate still starts the soup and only the
    others are tried in a permutation seeded with ``seed``.

    The result scores at least as well as the best candidate (the held-out score never drops),
    and it equals ``uniform_soup`` of the accepted ids.

    Args:
        candidates: ``{id: state_dict}``, one architecture.
        evaluate: ``state_dict -> held-out score``, higher is better (deterministic).
        accept: ``">="`` or ``">"``.
        order: ``"sorted"`` or ``"random"``.
        seed: seed of the ``random`` order.

    Returns:
        ``(soup, log)``; ``log`` lists, in the order tried, ``{"id", "score", "accepted",
        "individual_score", "n_ingredients"}`` where ``score`` is the held-out score of the soup
        the candidate was tried in (for the first, its own score) and ``n_ingredients`` the
        soup size after the decision.

    Raises:
        MergeError: empty or incompatible candidates; ConfigError-like ``ValueError`` for a bad
            ``accept`` / ``order``.
    """
    if accept not in (">=", ">"):
        raise MergeError(f"greedy_soup: accept must be '>=' or '>' (got {accept!r}).")
    if order not in ("sorted", "random"):
        raise MergeError(f"greedy_soup: order must be 'sorted' or 'random' (got {order!r}).")
    _check_candidates(candidates, "greedy_soup")
    individual = {name: float(evaluate(sd)) for name, sd in candidates.items()}
    ranked = _best_first(individual, later_listed_first=accept == ">")
    if order == "random":
        rest = ranked[1:]
        random.Random(seed).shuffle(rest)
        ranked = ranked[:1] + rest
    acc = SoupAccumulator(where="greedy_soup")
    first = ranked[0]
    acc.add(candidates[first], name=first)
    best_score = individual[first]
    log = [
        {
            "id": first,
            "score": best_score,
            "accepted": True,
            "individual_score": individual[first],
            "n_ingredients": 1,
        }
    ]
    for name in ranked[1:]:
        trial = acc.mean(extra=candidates[name])
        score = float(evaluate(trial))
        accepted = score >= best_score if accept == ">=" else score > best_score
        if accepted:
            acc.add(candidates[name], name=name)
            best_score = score
        log.append(
            {
                "id": name,
                "score": score,
                "accepted": accepted,
                "individual_score": individual[name],
                "n_ingredients": acc.n_added,
            }
        )
    return acc.mean(), log


def pruned_soup(
    candidates: Mapping[str, Mapping[str, torch.Tensor]],
    evaluate: Evaluate,
) -> tuple[StateDict, list[dict[str, Any]]]:
    """Return the pruned soup and its decision log (Sobral et al. 2022, ``make_soup`` PRUNED).

    Starts from the uniform soup of every candidate. The best individual candidate (ties: the
    first listed) is kept and never tried; the others are tried once each, worst first (the
    reverse of the best-first ranking, so equal scores are tried later-listed first, as
    ``reversed(...)`` in ``make_soup``): one is removed if the held-out score of the soup without
    it is ``>=`` the current soup's score. The soup therefore always contains the best model.

    Args:
        candidates: ``{id: state_dict}``, one architecture.
        evaluate: ``state_dict -> held-out score``, higher is better (deterministic).

    Returns:
        ``(soup, log)``; ``log`` starts with ``{"id": None, "score": s0, "accepted": True,
        ...}`` for the full uniform soup, then ``{"id": best, "score": None, "removed": False,
        "note": ...}`` for the kept best candidate, then one entry per candidate in the order
        tried: ``{"id", "score", "accepted", "removed", "individual_score", "n_ingredients"}``
        where ``score`` is the score of the soup without that candidate, ``accepted``/``removed``
        say whether the removal was kept and ``n_ingredients`` is the soup size after it.

    Raises:
        MergeError: empty or incompatible candidates.
    """
    _check_candidates(candidates, "pruned_soup")
    individual = {name: float(evaluate(sd)) for name, sd in candidates.items()}
    best, *others = _best_first(individual)
    kept = list(candidates)

    def soup_of(ids: list[str]) -> StateDict:
        # Recomputed from scratch (not sum minus one) so the result is bit-identical to
        # uniform_soup of the ids that remain.
        return uniform_soup({i: candidates[i] for i in ids})

    current = float(evaluate(soup_of(kept)))
    log: list[dict[str, Any]] = [
        {
            "id": None,
            "score": current,
            "accepted": True,
            "removed": False,
            "individual_score": None,
            "n_ingredients": len(kept),
        }
    ]
    log.append(
        {
            "id": best,
            "score": None,
            "accepted": False,
            "removed": False,
            "individual_score": individual[best],
            "n_ingredients": len(kept),
            "note": "best individual candidate: kept, never a removal candidate",
        }
    )
    for name in reversed(others):
        trial = [i for i in kept if i != name]
        score = float(evaluate(soup_of(trial)))
        removed = score >= current
        if removed:
            kept, current = trial, score
        log.append(
            {
                "id": name,
                "score": score,
                "accepted": removed,
                "removed": removed,
                "individual_score": individual[name],
                "n_ingredients": len(kept),
            }
        )
    return soup_of(kept), log
