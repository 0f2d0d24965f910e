"""Held-out accuracy of a classifier: the score greedy and pruned soups select by.

The images are preprocessed once (:class:`PreprocessedSplit`) and every candidate soup is
scored on the same tensors, in the same order, in eval mode without gradients, so the score is
deterministic for given weights and device.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["PreprocessedSplit", "accuracy"]


@dataclass
class PreprocessedSplit:
    """A dataset split held in memory as preprocessed batches.

    Attributes:
        images: ``(n, 3, h, w)`` float tensor (the model's eval transform applied).
        labels: ``(n,)`` int64.
        batch_size: forward-pass batch size.
    """

    images: torch.Tensor
    labels: torch.Tensor
    batch_size: int = 64

    @classmethod
    def from_dataset(cls, dataset, batch_size: int = 64) -> PreprocessedSplit:
        """Preprocess every sample of a map-style dataset of ``Sample(image=tensor, label=…)``."""
        images, labels = [], []
        for i in range(len(dataset)):
            sample = dataset[i]
            images.append(sample.image)
            labels.append(int(sample.label))
        return cls(torch.stack(images), torch.tensor(labels, dtype=torch.int64), batch_size)

    def __len__(self) -> int:
        return int(self.labels.numel())

    def batches(self) -> Iterator[torch.Tensor]:
        """Yield the image batches in order."""
        for start in range(0, len(self), self.batch_size):
            yield self.images[start : start + self.batch_size]


@torch.no_grad()
def accuracy(
    model: nn.Module,
    split: PreprocessedSplit,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    *,
    device: torch.device | str = "cpu",
) -> float:
    """Return the top-1 accuracy in [0, 1] of ``model``'s own head on ``split``.

    Args:
        model: a classifier whose ``model(x)`` returns logits ``(b, n_classes)``.
        split: the preprocessed held-out split.
        state_dict: weights loaded (strictly) into ``model`` first, if given.
        device: where the forward passes run.
    """
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    model.eval().to(device)
    correct = 0
    for start, x in zip(range(0, len(split), split.batch_size), split.batches(), strict=True):
        logits = model(x.to(device))
        y = split.labels[start : start + x.shape[0]].to(logits.device)
        correct += int((logits.argmax(dim=1) == y).sum())
    return correct / max(len(split), 1)
