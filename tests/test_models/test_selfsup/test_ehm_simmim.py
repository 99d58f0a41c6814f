# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""EHMSimMIM: teacher masks on SimMIM's mask grid, Swin and ViT."""
import copy
import random

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.optim import build_optim_wrapper
from mmpretrain.structures import DataSample
from tiny_models import SIMMIM_L1 as L1
from tiny_models import TINY_EHM_SIMMIM_SWIN as SWIN
from tiny_models import TINY_EHM_SIMMIM_VIT as VIT
from tiny_models import build_tiny as build

import ehm_mm  # noqa: F401
from ehm_mm.models.selfsup.ehm_simmim import (
    feature_affinity,
    pool_affinity,
)


def images(size: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size,
                       generator=torch.Generator().manual_seed(1))


@pytest.fixture
def hub():
    hub = MessageHub.get_instance('test_ehm_simmim')
    hub.update_info('iter', 100)
    hub.update_info('max_iters', 100)
    yield hub
    MessageHub._instance_dict.pop('test_ehm_simmim')


@pytest.mark.parametrize('base, size, grids, affinity', [
    (SWIN, 128, ((32, 32), (4, 4)), 'features'),
    (VIT, 64, ((8, 8), (8, 8)), 'attention'),
], ids=['swin', 'vit'])
def test_masks_on_the_mask_grid(base, size, grids, affinity, hub):
    model = build(base)
    assert (model.token_grid, model.mask_grid) == grids
    assert model.affinity == affinity
    result = model.generate_masks(images(size), 1.0)
    mask = model.token_mask(result)
    gh, gw = model.mask_grid
    assert mask.shape == (2, *model.token_grid)
    blocks = mask.view(2, gh, model.scale, gw, model.scale)
    assert (blocks == blocks[:, :, :1, :, :1]).all()
    assert (blocks[:, :, 0, :, 0].sum((1, 2)) == round(0.6 * gh * gw)).all()
    assert (result.depth == 3).all()  # d(1) = d_max on trees of height >= 4


@pytest.mark.parametrize('base, size', [(SWIN, 128), (VIT, 64)],
                         ids=['swin', 'vit'])
def test_training_step(base, size, hub):
    model = build(base)
    model.train()
    optim = build_optim_wrapper(
        model, dict(type='OptimWrapper',
                    optimizer=dict(type='AdamW', lr=1e-2)))
    before = copy.deepcopy(model.teacher.module.state_dict())
    # masks in the data samples are ignored
    samples = [DataSample().set_mask(torch.ones(1)) for _ in range(2)]
    losses = model(images(size), samples, mode='loss')
    assert set(losses) == {'loss', 'mask_depth', 'nonfinite_affinity',
                           'mask_node_size', 'teacher_distance'}
    assert float(losses['mask_node_size']) >= 1
    assert torch.isfinite(losses['loss']) and losses['mask_depth'] == 3
    assert losses['nonfinite_affinity'] == 0
    optim.update_params(losses['loss'])
    assert not any(p.requires_grad for p in model.teacher.parameters())
    model(images(size), samples, mode='loss')  # second EMA update
    changed = [k for k, v in model.teacher.module.state_dict().items()
               if not torch.equal(v, before[k])]
    assert changed  # the teacher moved towards the updated student


def test_swin_affinity_is_teacher_feature_similarity(hub):
    model = build(SWIN)
    x = images(128)
    teacher = model.teacher.module
    teacher.eval()  # (Swin's train() returns None)
    with torch.no_grad():
        outs = teacher(x, mask=None)
    assert outs[-1].shape[-2:] == (4, 4)  # stride 32: one per mask patch
    expected = feature_affinity(outs, (4, 4))
    assert torch.allclose(model.teacher_affinity(x), expected)
    assert torch.allclose(expected.diagonal(dim1=1, dim2=2),
                          torch.ones(2, 16))


def test_feature_and_pooled_affinity():
    fmap = torch.zeros(1, 2, 4, 4)
    fmap[0, 0, :, :2] = 1  # left half points one way
    fmap[0, 1, :, 2:] = 1  # right half the other
    sim = feature_affinity([fmap], (2, 2))
    assert torch.equal(sim[0], torch.tensor([[1., 0., 1., 0.],
                                             [0., 1., 0., 1.],
                                             [1., 0., 1., 0.],
                                             [0., 1., 0., 1.]]))
    tokens = torch.arange(16.).view(1, 16, 1) * torch.ones(1, 1, 16)
    pooled = pool_affinity(tokens, (4, 4), 2)  # rows: token index
    assert pooled.shape == (1, 4, 4)
    assert torch.equal(pooled[0, :, 0], torch.tensor([2.5, 4.5, 10.5, 12.5]))


def test_vit_with_larger_mask_patches_pools_the_attention(hub):
    model = build(VIT, mask_patch_size=16)
    assert model.mask_grid == (4, 4) and model.scale == 2
    mask = model.token_mask(model.generate_masks(images(64), 0.5))
    assert mask.view(2, 4, 2, 4, 2)[:, :, 0, :, 0].sum() == 2 * 10


def test_masks_are_reproducible_per_iteration(hub):
    model = build(VIT)
    x = images(64)
    masks = []
    for _ in range(2):
        depth = model.masking.draw_depths(
            0.5, 2, random.Random(model.mask_seed('depth')))
        masks.append(model.token_mask(model.generate_masks(
            x, 0.5, model._mask_generator(x.device), depth)))
    assert torch.equal(masks[0], masks[1])
    hub.update_info('iter', 7)  # another iteration, other masks
    depth = model.masking.draw_depths(
        0.5, 2, random.Random(model.mask_seed('depth')))
    assert not torch.equal(
        masks[0],
        model.token_mask(model.generate_masks(
            x, 0.5, model._mask_generator(x.device), depth)))


@pytest.mark.parametrize('base, changes, error, match', [
    (SWIN, dict(affinity='attention'), ValueError, 'window attention'),
    (SWIN, dict(affinity='cls'), ValueError, 'model.affinity'),
    (SWIN, dict(attn_layers=[0]), ValueError, 'attn_layers'),
    (SWIN, dict(mask_patch_size=6), ValueError, 'multiple of the encoder'),
    (SWIN, dict(mask_patch_size=48), ValueError, 'does not divide'),
    (SWIN, dict(head=dict(type='SimMIMHead', patch_size=8, loss=L1)),
     ValueError, 'head.patch_size'),
    (SWIN, dict(masking=dict(type='EvolvedHierarchicalMasking', d_max=5.)),
     ValueError, 'model.masking: d_max=5'),
    (SWIN, dict(masking=dict(type='EvolvedHierarchicalMasking',
                             grid_size=(6, 6))),
     ValueError, 'not the mask grid'),
    (SWIN, dict(teacher='student'), ValueError, 'model.teacher'),
    (VIT, dict(backbone=dict(type='VisionTransformer', arch='deit-tiny',
                             img_size=64, patch_size=8)),
     TypeError, 'mask_token'),
], ids=['swin-attention', 'affinity', 'attn_layers', 'patch',
        'token-grid', 'head', 'depth', 'mask-grid', 'teacher',
        'no-mask-token'])
def test_bad_configs_are_named(base, changes, error, match):
    with pytest.raises(error, match=match):
        build(base, **changes)


def test_online_teacher_has_no_copy(hub):
    model = build(VIT, teacher='online')
    assert model.teacher is None
    assert {k.split('.')[0] for k in model.state_dict()} == {
        'backbone', 'neck'}
    model.train()
    model(images(64), [DataSample(), DataSample()], mode='loss')
    assert model.backbone.training


def test_content_free_masks_skip_the_teacher(hub):
    # As in EHMMAE: a masking that needs no affinity never runs the teacher,
    # whatever the drawn depth (progress 1 here: depth 3).
    model = build(VIT, masking=dict(type='RandomHierarchyMasking',
                                    mask_ratio=0.6, d_max=3.0))
    model.train()
    calls = []
    model.teacher_affinity = lambda x: calls.append(x)
    losses = model(images(64), mode='loss')
    result = model.generate_masks(images(64), 1.0)
    mask = model.token_mask(result)
    assert calls == [] and torch.isfinite(losses['loss'])
    assert float(losses['mask_depth']) == 3
    assert (result.depth == 3).all() and mask.shape == (2, 8, 8)
