"""The training loop: full-batch-free minibatch SGD (AdamW) over preprocessed tensors.

The demo trains tiny real models on 8×8 digits on a 2-core CPU, so the images are preprocessed
once (the model's own eval transform, :class:`~sim_consistency.merging.evaluate.PreprocessedSplit`)
and every epoch only reshuffles row indices. No augmentation, no dropout: the only randomness is
the shuffling order, drawn from a ``torch.Generator`` seeded with the run's ``seed``, and whatever
the model draws in training mode, under :func:`deterministic` (forked, seeded global RNG and
``torch.use_deterministic_algorithms``, one CPU thread). Same inputs and device: bitwise the
same weights.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from sim_consistency.errors import ConfigError
from sim_consistency.merging.evaluate import PreprocessedSplit, accuracy
from sim_consistency.progress import progress_bar

__all__ = ["FitOptions", "SCHEDULES", "deterministic", "fit", "learning_rate", "torch_threads"]

Schedule = Literal["constant", "cosine"]
SCHEDULES: tuple[str, ...] = ("constant", "cosine")


@dataclass(frozen=True)
class FitOptions:
    """How one training run optimises (everything that changes its weights).

    Attributes:
        epochs: passes over the training rows.
        lr: peak AdamW learning rate.
        schedule: ``constant`` (pre-training: snapshots along one trajectory are comparable) or
            ``cosine`` (fine-tuning: decays to 0 at the last step, per step).
        seed: seeds the shuffling order and the model's training-mode randomness.
        batch_size: rows per step; a trailing batch of one row is dropped (BatchNorm needs two).
        weight_decay: decoupled AdamW weight decay.
    """

    epochs: int
    lr: float
    schedule: Schedule = "constant"
    seed: int = 0
    batch_size: int = 64
    weight_decay: float = 0.05

    def __post_init__(self) -> None:
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ConfigError(f"training: epochs must be a positive integer (got {self.epochs!r}).")
        if not (isinstance(self.lr, int | float) and self.lr > 0):
            raise ConfigError(f"training: lr must be a positive number (got {self.lr!r}).")
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"training: unknown schedule {self.schedule!r}. Valid: {', '.join(SCHEDULES)}."
            )
        if not (isinstance(self.batch_size, int) and self.batch_size >= 2):
            raise ConfigError(
                f"training: batch_size must be an integer >= 2 (got {self.batch_size!r})."
            )

    def to_json(self) -> dict[str, Any]:
        """The options as plain JSON (part of a run's recipe)."""
        return asdict(self)


def learning_rate(options: FitOptions, step: int, n_steps: int) -> float:
    """Return the learning rate of optimisation step ``step`` (0-based) of ``n_steps``."""
    if options.schedule == "constant":
        return float(options.lr)
    return float(options.lr) * 0.5 * (1.0 + math.cos(math.pi * step / n_steps))


@contextlib.contextmanager
def deterministic(seed: int, device: torch.device) -> Iterator[None]:
    """Run the body with a seeded, forked global RNG, deterministic algorithms, one CPU thread.

    One intra-op thread on the CPU: the demo's models are too small to gain from more, a fixed
    thread count keeps reductions in one order (the same weights on any machine), and on a
    shared machine busy threads of other processes make a 2-thread step up to ~25x slower than
    a 1-thread one (OpenMP workers waiting on each other; measured on the 2-core build machine).

    The caller's RNG state, determinism setting and thread count are restored afterwards. On
    CUDA, non-deterministic kernels warn instead of failing (``warn_only``): cuBLAS needs
    ``CUBLAS_WORKSPACE_CONFIG`` set before start-up for full determinism.
    """
    devices = [device] if device.type == "cuda" else []
    was_enabled = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=devices), torch_threads(1):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_enabled, warn_only=was_warn_only)


@contextlib.contextmanager
def torch_threads(n_threads: int) -> Iterator[None]:
    """Run the body with ``n_threads`` intra-op CPU threads; restore the count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    batches = list(torch.split(order, batch_size))
    if batches and batches[-1].numel() < 2:
        batches.pop()
    return batches


def fit(
    model: nn.Module,
    train: PreprocessedSplit,
    options: FitOptions,
    *,
    heldout: PreprocessedSplit | None = None,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[dict[str, Any], nn.Module], None] | None = None,
    desc: str = "training",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train ``model`` in place with AdamW and cross-entropy; return the per-epoch curve.

    Args:
        model: a classifier whose ``model(x)`` returns logits ``(b, n_classes)``.
        train: the preprocessed training rows.
        options: optimisation settings (:class:`FitOptions`).
        heldout: rows scored (top-1, eval mode) after every epoch, if given.
        device: where the model trains.
        on_epoch: called as ``on_epoch(record, model)`` after each epoch with that epoch's curve
            record (``record["epoch"]`` is 1-based), e.g. to save a snapshot.
        desc: progress-bar label.
        progress: report progress over optimisation steps (sim_consistency.progress).

    Returns:
        One dict per epoch: ``epoch``, ``train_loss`` (mean over the epoch's rows, accumulated
        in float64), ``train_acc`` (training-mode predictions during the epoch), ``lr`` (at the
        epoch's last step) and ``heldout_acc`` (``None`` without ``heldout``).
    """
    device = torch.device(device)
    if len(train) < 2:
        raise ConfigError(f"{desc}: needs at least 2 training rows (got {len(train)}).")
    model.to(device)
    generator = torch.Generator().manual_seed(options.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=options.lr, weight_decay=options.weight_decay
    )
    steps_per_epoch = len(_batches(len(train), options.batch_size, torch.Generator()))
    n_steps = options.epochs * steps_per_epoch
    images, labels = train.images, train.labels
    curve: list[dict[str, Any]] = []
    step = 0
    with (
        deterministic(options.seed, device),
        progress_bar(
            total=n_steps, desc=desc, unit="step", disable=not progress, leave=False
        ) as bar,
    ):
        for epoch in range(1, options.epochs + 1):
            model.train()
            loss_sum, n_correct, n_seen = 0.0, 0, 0
            lr = learning_rate(options, step, n_steps)
            for rows in _batches(len(train), options.batch_size, generator):
                lr = learning_rate(options, step, n_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x, y = images[rows].to(device), labels[rows].to(device)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * int(y.numel())
                n_correct += int((logits.detach().argmax(dim=1) == y).sum())
                n_seen += int(y.numel())
                step += 1
                bar.update(1)
            record = {
                "epoch": epoch,
                "train_loss": loss_sum / n_seen,
                "train_acc": n_correct / n_seen,
                "lr": lr,
                "heldout_acc": None if heldout is None else accuracy(model, heldout, device=device),
            }
            curve.append(record)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=record["heldout_acc"])
            if on_epoch is not None:
                on_epoch(record, model)
    model.eval()
    return curve
