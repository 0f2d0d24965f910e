"""Weight-space geometry of soups and their ingredients, streamed one tensor at a time.

For a set of models with identical state-dict layouts (ingredients, soups, a base), this computes
per tensor and for the whole model:

* pairwise L2 distance ``‖θ_i − θ_j‖`` and cosine ``⟨θ_i, θ_j⟩ / (‖θ_i‖‖θ_j‖)``;
* with a ``base`` θ_0, the same for the task vectors ``τ_i = θ_i − θ_0`` (the base itself is left
  out of the task-vector tables), and ``‖τ_i‖`` (distance from the base).

Estimator: for each tensor, the ``m`` flattened copies are stacked in float64 and the Gram matrix
of the rows is accumulated. Distances come from the Gram of the rows *centred on their mean*
(distance is translation invariant, and centring removes the large common component that would
otherwise cancel in ``G_ii + G_jj − 2 G_ij``); cosines from the raw Gram. Whole-model values sum
the per-tensor Grams, so memory is one tensor × ``m`` models regardless of model size.

Which entries count: floating-point tensors only (integer buffers such as
``num_batches_tracked`` are never weights); BatchNorm running statistics are excluded by default
(``include_running_stats=False``) because they are data statistics, not learned weights — the
choice is recorded in every table row's ``scope`` column.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from sim_consistency.errors import ConfigError, MissingInputError

if TYPE_CHECKING:
    from safetensors import safe_open

__all__ = [
    "RUNNING_STAT_SUFFIXES",
    "StateSource",
    "WeightGeometry",
    "weight_geometry",
]

#: Name suffixes of BatchNorm running statistics (data statistics, not learned weights).
RUNNING_STAT_SUFFIXES: tuple[str, ...] = ("running_mean", "running_var")

#: A model's weights: a ``.safetensors`` path (read lazily, one tensor at a time) or a state dict.
StateSource = str | os.PathLike | Mapping[str, torch.Tensor]


class _Reader:
    """Uniform lazy access to a state dict or a safetensors file."""

    def __init__(self, model_id: str, source: StateSource) -> None:
        self.model_id = model_id
        self._tensors: Mapping[str, torch.Tensor] | safe_open
        if isinstance(source, Mapping):
            self._tensors = source
            self.where = f"model {model_id!r}"
        else:
            from safetensors import safe_open

            path = Path(source)
            if not path.is_file():
                raise MissingInputError(
                    f"{path}: weights of model {model_id!r} not found; materialise them first "
                    "(python scripts/build_variants.py) or check the path."
                )
            self._tensors = safe_open(str(path), framework="pt")
            self.where = str(path)

    def names(self) -> list[str]:
        return list(self._tensors.keys())

    def get(self, name: str) -> torch.Tensor:
        if isinstance(self._tensors, Mapping):
            return self._tensors[name]
        return self._tensors.get_tensor(name)


@dataclass(frozen=True)
class WeightGeometry:
    """Tables produced by :func:`weight_geometry` (tidy, one row per pair × scope).

    Attributes:
        pairs: whole-model rows ``model_a, model_b, kind, l2_distance, cosine`` with ``kind`` in
            ``{"weights", "task_vector"}``.
        layers: the same per tensor, with ``tensor`` and ``numel`` columns.
        norms: ``model_id, kind, norm`` (``kind="task_vector"`` norms are distances to the base).
    """

    pairs: pd.DataFrame
    layers: pd.DataFrame
    norms: pd.DataFrame


def _check_layouts(readers: Sequence[_Reader], names: list[str]) -> None:
    reference = readers[0]
    for reader in readers[1:]:
        theirs = set(reader.names())
        missing = [n for n in names if n not in theirs]
        extra = sorted(theirs - set(reference.names()))
        if missing or extra:
            raise ConfigError(
                f"weight_geometry: {reader.where} does not have the layout of {reference.where} "
                f"(missing {missing[:5]}, extra {extra[:5]}); all models must share one "
                "architecture."
            )


def _stack(readers: Sequence[_Reader], name: str) -> torch.Tensor | None:
    """Return the ``(m, numel)`` float64 stack of one tensor, or None if it is not floating."""
    rows = []
    shape = None
    for reader in readers:
        tensor = reader.get(name)
        if shape is None:
            if not tensor.dtype.is_floating_point:
                return None
            shape = tuple(tensor.shape)
        elif tuple(tensor.shape) != shape:
            raise ConfigError(
                f"weight_geometry: tensor {name!r} has shape {tuple(tensor.shape)} in "
                f"{reader.where} but {shape} in {readers[0].where}."
            )
        rows.append(tensor.detach().to("cpu", torch.float64).reshape(-1))
    return torch.stack(rows)


def _gram_tables(gram_raw: np.ndarray, gram_centred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (distance matrix, cosine matrix) from raw and mean-centred Gram matrices."""
    diag = np.diag(gram_centred)
    dist2 = diag[:, None] + diag[None, :] - 2.0 * gram_centred
    dist = np.sqrt(np.clip(dist2, 0.0, None))
    np.fill_diagonal(dist, 0.0)
    norms = np.sqrt(np.clip(np.diag(gram_raw), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = gram_raw / np.outer(norms, norms)
    cosine[np.outer(norms, norms) == 0] = np.nan
    return dist, cosine


def _pair_rows(
    ids: Sequence[str], dist: np.ndarray, cosine: np.ndarray, **extra: object
) -> Iterator[dict]:
    for i, j in itertools.combinations(range(len(ids)), 2):
        yield {
            "model_a": ids[i],
            "model_b": ids[j],
            **extra,
            "l2_distance": float(dist[i, j]),
            "cosine": float(cosine[i, j]),
        }


def weight_geometry(
    models: Mapping[str, StateSource],
    *,
    base: str | None = None,
    include_running_stats: bool = False,
    tensor_filter: Callable[[str], bool] | None = None,
) -> WeightGeometry:
    """Return pairwise distances/cosines between models and between their task vectors.

    Args:
        models: ``{model_id: safetensors path or state dict}``, at least two, same layout.
        base: the id (a key of ``models``) of θ_0 for task vectors; ``None`` skips them.
        include_running_stats: count BatchNorm running statistics as weights.
        tensor_filter: optional predicate on tensor names (e.g. one block's prefix).

    Returns:
        A :class:`WeightGeometry` of tidy tables.

    Raises:
        ConfigError: fewer than two models, an unknown base, different layouts or shapes,
            or no tensor left to compare.
    """
    ids = list(models)
    if len(ids) < 2:
        raise ConfigError(f"weight_geometry: needs at least two models (got {ids}).")
    if base is not None and base not in models:
        raise ConfigError(f"weight_geometry: base {base!r} is not one of the models {ids}.")
    readers = [_Reader(model_id, models[model_id]) for model_id in ids]
    names = [
        n
        for n in readers[0].names()
        if (tensor_filter is None or tensor_filter(n))
        and (include_running_stats or not n.endswith(RUNNING_STAT_SUFFIXES))
    ]
    _check_layouts(readers, names)

    scope = "weights+running_stats" if include_running_stats else "weights"
    m = len(ids)
    base_index = ids.index(base) if base is not None else None
    others = [i for i in range(m) if i != base_index]
    totals = {"raw": np.zeros((m, m)), "centred": np.zeros((m, m)), "task": np.zeros((m, m))}
    layer_rows: list[dict] = []
    for name in names:
        stacked = _stack(readers, name)
        if stacked is None:  # integer buffers (num_batches_tracked, …) are not weights
            continue
        raw = (stacked @ stacked.T).numpy()
        centred_rows = stacked - stacked.mean(dim=0, keepdim=True)
        centred = (centred_rows @ centred_rows.T).numpy()
        totals["raw"] += raw
        totals["centred"] += centred
        dist, cosine = _gram_tables(raw, centred)
        numel = stacked.shape[1]
        layer_rows.extend(
            _pair_rows(ids, dist, cosine, kind="weights", tensor=name, numel=numel, scope=scope)
        )
        if base_index is not None:
            task = stacked - stacked[base_index]
            task_gram = (task @ task.T).numpy()
            totals["task"] += task_gram
            t_ids = [ids[i] for i in others]
            t_gram = task_gram[np.ix_(others, others)]
            t_dist, t_cos = _gram_tables(t_gram, _centre_gram(t_gram))
            layer_rows.extend(
                _pair_rows(
                    t_ids, t_dist, t_cos, kind="task_vector", tensor=name, numel=numel, scope=scope
                )
            )

    if not layer_rows:
        raise ConfigError("weight_geometry: no floating-point weight tensor to compare.")
    dist, cosine = _gram_tables(totals["raw"], totals["centred"])
    pair_rows = list(_pair_rows(ids, dist, cosine, kind="weights", scope=scope))
    norm_rows = [
        {"model_id": ids[i], "kind": "weights", "norm": float(np.sqrt(totals["raw"][i, i]))}
        for i in range(m)
    ]
    if base_index is not None:
        t_gram = totals["task"][np.ix_(others, others)]
        t_dist, t_cos = _gram_tables(t_gram, _centre_gram(t_gram))
        pair_rows.extend(
            _pair_rows([ids[i] for i in others], t_dist, t_cos, kind="task_vector", scope=scope)
        )
        norm_rows.extend(
            {"model_id": ids[i], "kind": "task_vector", "norm": float(np.sqrt(t_gram[k, k]))}
            for k, i in enumerate(others)
        )
    return WeightGeometry(
        pairs=pd.DataFrame(pair_rows),
        layers=pd.DataFrame(layer_rows),
        norms=pd.DataFrame(norm_rows),
    )


def _centre_gram(gram: np.ndarray) -> np.ndarray:
    """Gram of mean-centred rows, from the raw Gram (H G H)."""
    m = gram.shape[0]
    h = np.eye(m) - np.full((m, m), 1.0 / m)
    return h @ gram @ h
