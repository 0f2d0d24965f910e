"""Stored probes and test predictions: the files next to a probe's ``results.json``.

Every probe result folder (single-model, combined, transfer) holds, besides ``results.json``:

* :data:`PREDICTIONS_FILE` (``test_predictions.npz``, plain ``np.savez``) — one row per test
  sample, in the test cache's row order:

  * ``keys`` — str (m,): the test rows' keys (the cache's ``/keys``), to align files;
  * ``labels`` — int64 (m,): the true labels (dataset label values);
  * ``logits`` — float32 (m, C): the probe's class scores; column j scores ``classes[j]``;
  * ``pred`` — int64 (m,): the predicted label, ``classes[argmax(logits)]`` (ties: first);
  * ``classes`` — int64 (C,): the label of each logit column;
  * ``block`` — str (0-d): the feature block the logits come from.

  ``softmax(logits)`` are the probe's class probabilities; the ensemble stage averages them.
  With several blocks probed, the logits are the deepest block's (the last of
  ``results.json``'s ``block_names``). Single-model results also hold every probed block's
  predictions — ``blocks`` (str (k,), the probed blocks in order) and ``probe_pred_<i>``
  (int64 (m,), ``blocks[i]``'s predicted labels) — and, when the model's own head was scored,
  ``head_pred`` (int64 (m,)); soup metrics' paired tests read these. Correct = prediction ==
  label.
* :data:`WEIGHTS_FILE` (``probe_weights.safetensors``) — per block ``<block>.weight`` (C, d)
  and ``<block>.bias`` (C,) (``nn.Linear``'s layout), float32 or float64 as fitted; scores are
  ``normalize(X) @ weight.T + bias`` on the block's features ``X`` with rows L2-normalised
  (both protocols normalise rows). The file's metadata holds ``classes`` (JSON list),
  ``blocks`` (JSON list) and ``input`` (the normalisation, in words). The transfer stage reads
  these to score another dataset.

``results.json`` records each file's SHA-256 (``stored_files``), so a reader can tell that the
files belong to that result; readers check shapes and say which file is at fault.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sim_consistency.errors import DataError
from sim_consistency.io import atomic_output

__all__ = [
    "PREDICTIONS_FILE",
    "WEIGHTS_FILE",
    "Predictions",
    "ProbeWeights",
    "read_predictions",
    "read_probe_weights",
    "softmax",
    "write_predictions",
    "write_probe_weights",
]

#: Test predictions of a probe (see the module docstring for the arrays).
PREDICTIONS_FILE = "test_predictions.npz"
#: Fitted probe weights of every probed block.
WEIGHTS_FILE = "probe_weights.safetensors"

_INPUT = "rows L2-normalised; scores = x @ weight.T + bias"


@dataclass(frozen=True)
class Predictions:
    """The content of a :data:`PREDICTIONS_FILE`."""

    keys: npt.NDArray[np.str_]
    labels: npt.NDArray[np.int64]
    logits: npt.NDArray[np.float32]
    pred: npt.NDArray[np.int64]
    classes: npt.NDArray[np.int64]
    block: str
    path: Path | None = None
    #: ``{block: predicted labels}`` of every probed block (single-model results only).
    block_predictions: Mapping[str, npt.NDArray[np.int64]] = field(default_factory=dict)
    #: The model's own head's predicted labels, when it was scored.
    head_pred: npt.NDArray[np.int64] | None = None

    def probabilities(self) -> npt.NDArray[np.float64]:
        """Return ``softmax(logits)`` in float64, (m, C)."""
        return softmax(self.logits)

    def top1(self) -> float:
        """Return the fraction of rows whose prediction equals the target."""
        return float(np.mean(self.pred == self.labels))


@dataclass(frozen=True)
class ProbeWeights:
    """One block's fitted probe: ``scores = normalize(X) @ weight.T + bias``."""

    weight: npt.NDArray[np.floating[Any]]  #: (C, d)
    bias: npt.NDArray[np.floating[Any]]  #: (C,)
    classes: npt.NDArray[np.int64]  #: (C,) label of each output column

    def scores(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Return the class scores of raw block features ``X`` (n, d), in float64."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.weight.shape[1]:
            raise DataError(
                f"probe weights: features of shape {X.shape} do not fit a probe on "
                f"{self.weight.shape[1]} dims."
            )
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        X = X / np.maximum(norms, 1e-12)  # torch.nn.functional.normalize's eps
        return X @ self.weight.astype(np.float64).T + self.bias.astype(np.float64)


def softmax(logits: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return the row-wise softmax of ``logits`` in float64 (max-shifted, exact for large values)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def write_predictions(
    path: str | os.PathLike,
    *,
    keys: Sequence[str] | npt.ArrayLike,
    labels: npt.ArrayLike,
    logits: npt.ArrayLike,
    classes: npt.ArrayLike,
    block: str,
    pred: npt.ArrayLike | None = None,
    block_predictions: Mapping[str, npt.ArrayLike] | None = None,
    head_pred: npt.ArrayLike | None = None,
) -> Path:
    """Write a :data:`PREDICTIONS_FILE` atomically; return its path.

    Args:
        path: the file to write.
        keys: (m,) row keys.
        labels: (m,) true labels.
        logits: (m, C) class scores.
        classes: (C,) label of each score column.
        block: the block the scores come from.
        pred: (m,) predicted labels when they are not ``classes[argmax(logits)]`` of the
            float32 logits (the ensemble takes the argmax of its float64 probabilities).
        block_predictions: ``{block: (m,) predicted labels}`` of every probed block.
        head_pred: (m,) the model head's predicted labels.
    """
    logits = np.asarray(logits, dtype=np.float32)
    classes = np.asarray(classes, dtype=np.int64)
    keys = np.asarray(keys, dtype=str)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or logits.shape != (keys.size, classes.size) or labels.size != keys.size:
        raise DataError(
            f"{path}: logits {logits.shape}, {keys.size} keys, {labels.size} labels and "
            f"{classes.size} classes do not fit together."
        )
    if pred is not None:
        predicted = np.asarray(pred, dtype=np.int64)
    elif keys.size:
        predicted = classes[logits.argmax(axis=1)]
    else:
        predicted = np.zeros(0, np.int64)
    arrays: dict[str, np.ndarray] = {
        "keys": keys, "labels": labels, "logits": logits, "pred": predicted, "classes": classes,
        "block": np.asarray(block),
    }  # fmt: skip
    if block_predictions:
        arrays["blocks"] = np.asarray(list(block_predictions), dtype=str)
        for i, p in enumerate(block_predictions.values()):
            arrays[f"probe_pred_{i}"] = np.asarray(p, dtype=np.int64)
    if head_pred is not None:
        arrays["head_pred"] = np.asarray(head_pred, dtype=np.int64)
    extra = [n for n, a in arrays.items() if n.endswith("pred") or n.startswith("probe_pred_")]
    if any(arrays[n].shape != (keys.size,) for n in extra):
        raise DataError(f"{path}: a prediction array does not have one entry per key.")
    with atomic_output(path, what="test predictions") as tmp, open(tmp, "wb") as f:
        save: Any = np.savez  # numpy's stub types **kwds as its allow_pickle flag
        save(f, **arrays)
    return Path(path)


def read_predictions(path: str | os.PathLike) -> Predictions:
    """Read and check a :data:`PREDICTIONS_FILE`.

    Raises:
        DataError: the file is missing, unreadable, lacks an array or has inconsistent shapes
            (the message names the file and says how to rebuild it).
    """
    path = Path(path)
    rebuild = "Re-run the probe stage with --force to rebuild it."
    if not path.is_file():
        raise DataError(f"{path}: no stored test predictions. {rebuild}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc}). {rebuild}") from None
    missing = [n for n in ("keys", "labels", "logits", "pred", "classes") if n not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)}. {rebuild}")
    logits = arrays["logits"]
    m = arrays["keys"].shape[0] if arrays["keys"].ndim == 1 else -1
    ok = (
        logits.ndim == 2
        and logits.shape == (m, arrays["classes"].size)
        and arrays["labels"].shape == (m,)
        and arrays["pred"].shape == (m,)
    )
    blocks = [str(b) for b in arrays.get("blocks", np.zeros(0, str))]
    per_block = {b: arrays.get(f"probe_pred_{i}") for i, b in enumerate(blocks)}
    head_pred = arrays.get("head_pred")
    for p in [*per_block.values(), head_pred]:
        ok = ok and (p is None or p.shape == (m,))
    ok = ok and all(p is not None for p in per_block.values())
    if not ok:
        raise DataError(
            f"{path}: inconsistent shapes (keys {arrays['keys'].shape}, labels "
            f"{arrays['labels'].shape}, logits {logits.shape}, pred {arrays['pred'].shape}, "
            f"classes {arrays['classes'].shape}, per-block or head predictions). {rebuild}"
        )
    return Predictions(
        keys=arrays["keys"].astype(str),
        labels=arrays["labels"].astype(np.int64),
        logits=logits.astype(np.float32),
        pred=arrays["pred"].astype(np.int64),
        classes=arrays["classes"].astype(np.int64),
        block=str(arrays["block"]) if "block" in arrays else "",
        path=path,
        block_predictions={b: p.astype(np.int64) for b, p in per_block.items() if p is not None},
        head_pred=None if head_pred is None else head_pred.astype(np.int64),
    )


def write_probe_weights(
    path: str | os.PathLike,
    params: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
    classes: npt.ArrayLike,
) -> Path:
    """Write a :data:`WEIGHTS_FILE` atomically; return its path.

    Args:
        path: the file to write.
        params: ``{block: (W (d, C), b (C,))}`` as :func:`linear_probe_blocks` returns them
            (stored transposed, as ``nn.Linear``'s ``weight`` (C, d)).
        classes: (C,) label of each output column.
    """
    from safetensors.numpy import save_file

    tensors: dict[str, np.ndarray] = {}
    for block, (W, b) in params.items():
        tensors[f"{block}.weight"] = np.ascontiguousarray(np.asarray(W).T)
        tensors[f"{block}.bias"] = np.ascontiguousarray(np.asarray(b))
    metadata = {
        "classes": json.dumps([int(c) for c in np.asarray(classes).tolist()]),
        "blocks": json.dumps(list(params)),
        "input": _INPUT,
    }
    with atomic_output(path, what="probe weights") as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def read_probe_weights(path: str | os.PathLike) -> dict[str, ProbeWeights]:
    """Read a :data:`WEIGHTS_FILE`: ``{block: ProbeWeights}`` in the order probed.

    Raises:
        DataError: missing or unreadable file, or tensors that do not fit the metadata.
    """
    from safetensors import safe_open

    path = Path(path)
    rebuild = "Re-run the probe stage with --force to rebuild it."
    if not path.is_file():
        raise DataError(f"{path}: no stored probe weights. {rebuild}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            blocks = json.loads(meta["blocks"])
            classes = np.asarray(json.loads(meta["classes"]), dtype=np.int64)
            out = {
                block: ProbeWeights(
                    f.get_tensor(f"{block}.weight"), f.get_tensor(f"{block}.bias"), classes
                )
                for block in blocks
            }
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, KeyError, ValueError
        raise DataError(f"{path}: unreadable probe weights ({exc!r}). {rebuild}") from None
    for block, probe in out.items():
        C = classes.size
        if probe.weight.ndim != 2 or probe.weight.shape[0] != C or probe.bias.shape != (C,):
            raise DataError(
                f"{path}: block {block!r} has weight {probe.weight.shape} and bias "
                f"{probe.bias.shape} for {C} classes. {rebuild}"
            )
    return out
