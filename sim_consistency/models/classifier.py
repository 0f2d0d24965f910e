"""An image encoder with an optional linear classification head (the model-soups wrapper).

open_clip models are analysed through their visual tower only. :class:`ImageClassifier` holds
that tower under ``visual`` and, for fine-tuned checkpoints such as model-soups' (Wortsman et
al., 2022, ``ModelWrapper``), a linear ``classification_head`` applied to the L2-normalised
image embedding. Its state-dict layout (``visual.*`` + ``classification_head.*``) is the one
:func:`~sim_consistency.models.checkpoints.load_state_dict_file` produces for model-soups files,
so zero-shot towers, fine-tuned checkpoints and their merges share parameter names.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ImageClassifier"]


class ImageClassifier(nn.Module):
    """``head(normalize(visual(x)))``, or the embedding ``visual(x)`` when there is no head.

    Args:
        visual: image encoder mapping ``(n, 3, h, w)`` images to ``(n, d)`` embeddings.
        classification_head: linear layer ``d -> n_classes``; ``None`` for an encoder only.
        normalize: L2-normalise the embedding before the head (model-soups does).
    """

    def __init__(
        self,
        visual: nn.Module,
        classification_head: nn.Linear | None = None,
        *,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.visual = visual
        self.classification_head = classification_head
        self.normalize = normalize

    @property
    def num_classes(self) -> int:
        """Output size of the head (0 without one, as timm says for headless models)."""
        head = self.classification_head
        return 0 if head is None else int(head.out_features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the image embeddings, ``(n, d)``."""
        return self.visual(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(n, n_classes)``, or embeddings ``(n, d)`` without a head."""
        features = self.visual(x)
        if self.classification_head is None:
            return features
        if self.normalize:
            features = features / features.norm(dim=-1, keepdim=True)
        return self.classification_head(features)
