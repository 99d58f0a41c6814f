# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""PipelineMaskMAE: MAE with the masks of the data samples."""
import pytest
import torch
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import ehm_mm  # noqa: F401

ARCH = dict(embed_dims=32, num_layers=1, num_heads=2, feedforward_channels=64)
CFG = dict(
    type='PipelineMaskMAE',
    backbone=dict(type='EHMMAEViT', arch=ARCH, img_size=32, patch_size=8),
    neck=dict(type='MAEPretrainDecoder', num_patches=16, patch_size=8,
              embed_dim=32, decoder_embed_dim=32, decoder_depth=1,
              decoder_num_heads=2),
    head=dict(type='MAEPretrainHead', norm_pix=True, patch_size=8,
              loss=dict(type='PixelReconstructionLoss', criterion='L2')))


def samples(masks):
    return [DataSample().set_mask(torch.as_tensor(m)) for m in masks]


def test_loss_uses_the_pipeline_masks(monkeypatch):
    torch.manual_seed(0)
    model = MODELS.build(CFG)
    x = torch.randn(2, 3, 32, 32)
    masks = torch.zeros(2, 4, 4, dtype=torch.long)
    masks[0, :3] = 1  # 12 of 16 patches
    masks[1, 1:] = 1
    seen = {}
    head_loss = model.head.loss

    def spy(pred, target, mask):
        seen['mask'] = mask
        return head_loss(pred, target, mask)

    monkeypatch.setattr(model.head, 'loss', spy)
    losses = model(x, samples(masks), mode='loss')
    assert set(losses) == {'loss'} and torch.isfinite(losses['loss'])
    assert torch.equal(seen['mask'], masks.flatten(1).float())


@pytest.mark.parametrize('masks, match', [
    (None, 'needs data_samples'),
    (torch.ones(2, 2, 2), 'patch grid'),
    (torch.stack([torch.eye(4), torch.ones(4, 4) - torch.eye(4)]).long(),
     'same number'),
])
def test_bad_masks_are_named(masks, match):
    model = MODELS.build(CFG)
    data = [DataSample(), DataSample()] if masks is None else samples(masks)
    with pytest.raises(ValueError, match=match):
        model(torch.randn(2, 3, 32, 32), data, mode='loss')


def test_needs_a_backbone_that_takes_masks():
    with pytest.raises(TypeError, match='EHMMAEViT'):
        MODELS.build(dict(CFG, backbone=dict(
            type='MAEViT', arch=ARCH, img_size=32, patch_size=8)))
