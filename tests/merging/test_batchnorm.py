"""BatchNorm policies: reset recovers known statistics on a real ResNet; anchor copies."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from sim_consistency.merging import (
    batchnorm_buffer_names,
    copy_batchnorm_buffers,
    recompute_batchnorm,
    uniform_soup,
)
from tests.merging.conftest import perturbed


def test_reset_recovers_known_statistics():
    # Inputs with per-channel mean (3, -1) and standard deviation (2, 0.5).
    g = torch.Generator().manual_seed(0)
    mean, std = torch.tensor([3.0, -1.0]), torch.tensor([2.0, 0.5])
    batches = [torch.randn(64, 2, 4, 4, generator=g) * std[:, None, None] + mean[:, None, None]]
    batches += [torch.randn(64, 2, 4, 4, generator=g) * std[:, None, None] + mean[:, None, None]]
    model = nn.Sequential(nn.BatchNorm2d(2)).eval()
    assert recompute_batchnorm(model, batches) == 1
    bn = model[0]
    data = torch.cat(batches)
    torch.testing.assert_close(bn.running_mean, data.mean(dim=(0, 2, 3)), rtol=0, atol=1e-6)
    per_batch = torch.stack([b.var(dim=(0, 2, 3), unbiased=True) for b in batches]).mean(0)
    torch.testing.assert_close(bn.running_var, per_batch, rtol=0, atol=1e-5)
    torch.testing.assert_close(bn.running_mean, mean, rtol=0, atol=0.15)
    torch.testing.assert_close(bn.running_var.sqrt(), std, rtol=0.05, atol=0)
    assert int(bn.num_batches_tracked) == 2 and bn.momentum == 0.1 and not bn.training


def test_reset_on_resnet_matches_every_layers_batch_statistics():
    model = timm.create_model("test_resnet", pretrained=False, num_classes=10).eval()
    dropout_like = [m for m in model.modules() if not isinstance(m, nn.BatchNorm2d)]
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(8, 3, 64, 64, generator=g) for _ in range(3)]
    seen: dict[str, list[torch.Tensor]] = {}

    def hook(name):
        def record(module, inputs, output):
            seen.setdefault(name, []).append(inputs[0].detach().mean(dim=(0, 2, 3)))

        return record

    bns = {n: m for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    handles = [m.register_forward_hook(hook(n)) for n, m in bns.items()]
    n_layers = recompute_batchnorm(model, batches)
    for h in handles:
        h.remove()
    assert n_layers == len(bns) > 5
    for name, module in bns.items():
        expected = torch.stack(seen[name]).mean(0)  # momentum=None: mean of batch means
        torch.testing.assert_close(module.running_mean, expected, rtol=1e-5, atol=1e-6)
        assert int(module.num_batches_tracked) == 3
    assert not model.training and not any(m.training for m in dropout_like)


def test_anchor_copy_and_buffer_names(resnet_sd):
    model = timm.create_model("test_resnet", pretrained=False, num_classes=10)
    names = batchnorm_buffer_names(model)
    assert "conv1.1.running_mean" in names and "conv1.1.num_batches_tracked" in names
    assert all(name in resnet_sd for name in names)
    other = perturbed(resnet_sd, 4)
    soup = uniform_soup([resnet_sd, other])
    anchored = copy_batchnorm_buffers(soup, other, names)
    for name in names:
        assert torch.equal(anchored[name], other[name])
    assert torch.equal(anchored["fc.weight"], soup["fc.weight"])
    vit = timm.create_model("test_vit", pretrained=False)
    assert batchnorm_buffer_names(vit) == []
    assert recompute_batchnorm(vit, [torch.zeros(1, 3, 160, 160)]) == 0


def test_reset_without_batches_is_an_error():
    with pytest.raises(ValueError, match="no batches"):
        recompute_batchnorm(nn.Sequential(nn.BatchNorm1d(3)), [])
