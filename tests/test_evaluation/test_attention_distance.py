# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Mean attention distance per layer: known answers and a real ViT."""
import math

import pytest
import torch
from mmpretrain.models import MAEViT

from ehm_mm.evaluation.metrics import attention_distance as module
from ehm_mm.evaluation.metrics.attention_distance import (
    mean_attention_distance,
    patch_distances,
)


def test_patch_distances_in_pixels():
    dist = patch_distances((2, 3), (8.0, 4.0))
    assert dist.shape == (6, 6)
    assert dist[0, 1] == pytest.approx(4.0)  # one column right
    assert dist[0, 3] == pytest.approx(8.0)  # one row down
    assert dist[0, 5] == pytest.approx(math.hypot(8.0, 8.0))
    assert torch.equal(dist, dist.t()) and float(dist.diag().abs().max()) == 0


def _tiny_vit(layers: int = 3) -> MAEViT:
    torch.manual_seed(0)
    vit = MAEViT(
        arch=dict(embed_dims=24, num_layers=layers, num_heads=2,
                  feedforward_channels=48),
        img_size=32, patch_size=8, mask_ratio=0.75)
    vit.eval()  # (mmpretrain's train() returns None)
    return vit


def test_known_attention_patterns(monkeypatch):
    vit = _tiny_vit()
    images = torch.randn(3, 3, 32, 32)
    dist = patch_distances((4, 4), (8.0, 8.0))

    def uniform(vit, chunk, layers):
        return torch.full((chunk.shape[0], 16, 16), 1 / 17)

    monkeypatch.setattr(module, 'attention_affinity', uniform)
    out = mean_attention_distance(vit, images, batch_size=2)
    assert out.shape == (3, )
    assert out.tolist() == pytest.approx([float(dist.mean())] * 3)

    def local(vit, chunk, layers):  # self-attention only
        return torch.eye(16).expand(chunk.shape[0], 16, 16) * 0.5

    monkeypatch.setattr(module, 'attention_affinity', local)
    assert mean_attention_distance(vit, images, layers=[0]).tolist() == [0.0]


def test_real_vit_per_layer_and_errors():
    vit = _tiny_vit(layers=2)
    out = mean_attention_distance(vit, torch.randn(4, 3, 32, 32))
    assert out.shape == (2, )
    # between self (0 px) and the farthest pair
    assert bool((out > 0).all() and (out < math.hypot(24, 24)).all())
    with pytest.raises(ValueError, match='images'):
        mean_attention_distance(vit, torch.randn(3, 32, 32))
