"""Fixtures for merging tests: real timm test models and seeded "fine-tuned" copies."""

from __future__ import annotations

import pytest
import timm
import torch


def perturbed(state_dict: dict, seed: int, scale: float = 0.02) -> dict:
    """A "fine-tune": every float tensor plus seeded Gaussian noise; integer buffers kept."""
    g = torch.Generator().manual_seed(seed)
    return {
        k: (v + scale * torch.randn(v.shape, generator=g, dtype=v.dtype))
        if v.is_floating_point()
        else v.clone()
        for k, v in state_dict.items()
    }


def _state_dict(name: str, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=10)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def vit_sd() -> dict:
    return _state_dict("test_vit")


@pytest.fixture(scope="session")
def convnext_sd() -> dict:
    return _state_dict("test_convnext")


@pytest.fixture(scope="session")
def resnet_sd() -> dict:
    return _state_dict("test_resnet")
