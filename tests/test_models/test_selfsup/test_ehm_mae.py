# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""EHMMAE: teacher, progress, masks from the hierarchy, checkpoint layout."""
import copy
import random
from unittest import mock

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.model import ExponentialMovingAverage
from mmengine.optim import build_optim_wrapper
from mmpretrain.models import MAEViT
from tiny_models import TINY_ARCH, TINY_EHM_MAE, build_tiny

import ehm_mm  # noqa: F401
from ehm_mm.models import EHMMAE, attention_affinity
from ehm_mm.models.selfsup import ema_teacher
from ehm_mm.models.selfsup.ehm_mae import mask_seed

ARCH = TINY_ARCH
CFG = TINY_EHM_MAE


def _build(**changes) -> EHMMAE:
    cfg = copy.deepcopy(CFG)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return build_tiny(cfg)


@pytest.fixture
def hub():
    """A message hub holding a training position, dropped afterwards."""
    hub = MessageHub.get_instance('test_ehm_mae')
    hub.update_info('iter', 0)
    hub.update_info('max_iters', 100)
    yield hub
    MessageHub._instance_dict.pop('test_ehm_mae')


def _images(batch: int = 4) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return torch.randn(batch, 3, 32, 32, generator=gen)


def test_checkpoint_layout():
    model = _build()
    keys = list(model.state_dict())
    maevit = list(MAEViT(arch=ARCH, img_size=32, patch_size=8).state_dict())
    assert [k[len('backbone.'):] for k in keys
            if k.startswith('backbone.')] == maevit
    assert [k[len('teacher.module.'):] for k in keys
            if k.startswith('teacher.module.')] == maevit
    assert 'teacher.steps' in keys
    # (MAE's pixel-loss head has no weights.)
    assert {k.split('.')[0] for k in keys} == {'backbone', 'neck', 'teacher'}
    # The teacher starts as a copy of the initialised student.
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(model.teacher.module.state_dict()[name], value)
    online = _build(teacher='online')
    assert {k.split('.')[0] for k in online.state_dict()} == {
        'backbone', 'neck'
    }


def test_training_step_updates_teacher_by_ema(hub):
    model = _build()
    model.train()
    assert not model.teacher.training and model.backbone.training
    optim = build_optim_wrapper(
        model,
        dict(
            type='OptimWrapper',
            optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.5)))
    teacher_before = copy.deepcopy(model.teacher.module.state_dict())
    losses = model(_images(), mode='loss')
    assert set(losses) == {'loss', 'mask_depth', 'nonfinite_affinity',
                           'mask_node_size', 'teacher_distance'}
    assert float(losses['mask_node_size']) >= 1
    assert float(losses['nonfinite_affinity']) == 0
    optim.update_params(losses['loss'])
    # No gradient ever reaches the teacher; weight decay leaves it alone.
    for name, param in model.teacher.named_parameters():
        assert not param.requires_grad and param.grad is None, name
    student_after_step = copy.deepcopy(model.backbone.state_dict())
    teacher_after_first = copy.deepcopy(model.teacher.module.state_dict())
    for name, value in teacher_after_first.items():
        assert torch.equal(value, teacher_before[name])  # first: a copy
    assert int(model.teacher.steps) == 1
    hub.update_info('iter', 1)
    model(_images(), mode='loss')
    assert int(model.teacher.steps) == 2
    params = dict(model.backbone.named_parameters())
    for name, value in model.teacher.module.state_dict().items():
        if name in params:
            expected = (0.75 * teacher_after_first[name] +
                        0.25 * student_after_step[name])
            assert torch.allclose(value, expected, atol=1e-6), name


def test_masks_come_from_the_hierarchy(hub):
    model = _build(ema_momentum=0.5)
    x = _images(8)
    hub.update_info('iter', 0)
    assert float(model(x, mode='loss')['mask_depth']) == 0.0
    hub.update_info('iter', 100)  # progress 1: depth d_max = 3
    assert model.current_progress() == 1.0
    masks = model.generate_masks(
        x, 1.0, generator=torch.Generator().manual_seed(0))
    heights = masks.hierarchy.heights
    assert torch.equal(masks.depth, torch.minimum(torch.full_like(
        heights, 3), heights))
    assert bool((masks.depth > 0).all())
    assert float(model(x, mode='loss')['mask_depth']) == pytest.approx(
        float(masks.depth.float().mean()))
    # Each mask is a union of whole nodes at its depth, one split at most.
    for b in range(x.shape[0]):
        nodes = masks.hierarchy.ancestors[b, masks.depth[b]]
        split = 0
        for node in nodes.unique():
            values = masks.mask[b][nodes == node]
            split += int(values.min() != values.max())
        assert split <= 1
    # Exactly round(0.75 * 16) = 12 masked patches per image.
    assert masks.mask.sum(1).tolist() == [12.0] * 8


def test_masks_depend_on_iteration_not_on_global_rng(hub):
    model = _build()
    x = _images()
    hub.update_info('iter', 40)
    first = model.generate_masks(x, 0.4, model._mask_generator(x.device))
    torch.rand(1000)  # move the global stream
    again = model.generate_masks(x, 0.4, model._mask_generator(x.device))
    assert torch.equal(first.mask, again.mask)
    hub.update_info('iter', 41)
    other = model.generate_masks(x, 0.4, model._mask_generator(x.device))
    assert not torch.equal(first.mask, other.mask)


def test_online_teacher_uses_the_student(hub):
    model = _build(teacher='online', attn_layers=[-1])
    model.train()
    x = _images()
    model.eval()
    expected = attention_affinity(model.backbone, x, layers=[-1])
    model.train()
    assert torch.equal(model.teacher_affinity(x), expected)
    assert model.backbone.training  # restored after the no-grad pass
    model(x, mode='loss')['loss'].backward()


def test_predict_writes_features_and_hierarchy():
    model = _build(feature_pool='cls')
    model.eval()
    samples = model(_images(3), mode='predict')
    assert len(samples) == 3
    assert samples[0].feature.shape == (48, )
    ancestors = samples[0].hierarchy_ancestors
    assert ancestors.dim() == 3 and ancestors.shape[1:] == (4, 4)
    assert torch.equal(ancestors[0].flatten(), torch.arange(16))


@pytest.mark.parametrize('changes, error, match', [
    (dict(masking=dict(mask_ratio=1.5)), ValueError,
     r'model.masking: mask_ratio must be a number in \(0, 1\)'),
    (dict(masking=dict(grid_size=(2, 2))), ValueError,
     r'model.masking.grid_size \(2, 2\) is not the encoder'),
    (dict(backbone=dict(mask_ratio=0.0)), ValueError, 'mask_ratio'),
    (dict(backbone=dict(img_size=36)), ValueError, 'backbone.img_size'),
    (dict(masking=dict(d_max=5.)), ValueError, 'model.masking: d_max'),
    (dict(neck=dict(num_patches=196)), ValueError, 'model.neck.num_patches'),
    (dict(head=dict(patch_size=16)), ValueError, 'model.head.patch_size'),
    (dict(attn_layers=[2]), ValueError, 'model.attn_layers'),
    (dict(teacher='frozen'), ValueError, 'model.teacher'),
    (dict(ema_momentum=0.), ValueError, 'model.ema_momentum'),
    (dict(backbone=dict(type='MAEViT')), TypeError, 'EHMMAEViT'),
])
def test_config_mistakes_fail_at_build(changes, error, match):
    with pytest.raises(error, match=match):
        _build(**changes)


def test_the_masking_module_owns_the_mask_ratio(hub):
    model = _build(masking=dict(mask_ratio=0.5))  # backbone keeps 0.75
    assert model.masking.grid_size == (4, 4)
    masks = model.generate_masks(_images(), 0.5)
    assert masks.mask.sum(1).tolist() == [8.0] * 4
    latent, mask, _ = model.backbone(
        _images(), mask=masks.mask, ids_restore=masks.ids_restore,
        ids_keep=masks.ids_keep)
    assert latent.shape == (4, 1 + 8, 48) and torch.equal(mask, masks.mask)


def test_ema_update_is_bit_identical_to_mmengine(hub):
    model = _build(ema_momentum=0.3)
    reference = ExponentialMovingAverage(model.backbone, momentum=0.3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        model.teacher.update_parameters(model.backbone)
        reference.update_parameters(model.backbone)
        with torch.no_grad():
            for param in model.backbone.parameters():
                param.add_(torch.randn(param.shape, generator=gen))
    assert model.teacher.num_updates == 4 and int(model.teacher.steps) == 4
    for (name, value), ref in zip(model.teacher.state_dict().items(),
                                  reference.state_dict().values()):
        assert torch.equal(value, ref), name
    # the host count comes back with a checkpoint
    again = _build(ema_momentum=0.3)
    again.load_state_dict(model.state_dict())
    assert again.teacher.num_updates == 4


def test_mask_seeds_are_hashed_from_seed_rank_and_iteration(hub):
    # Issue 15 item 10: a linear mix such as ``iter + 7919 * rank`` gave
    # rank 1 at iteration 0 the stream of rank 0 at iteration 7919.
    seeds = {mask_seed(7, rank, it, 'noise')
             for rank in range(4) for it in (0, 1, 7919, 7920, 15838)}
    assert len(seeds) == 20
    assert mask_seed(7, 1, 0, 'noise') == mask_seed(7, 1, 0, 'noise')
    assert mask_seed(7, 1, 0, 'noise') != mask_seed(7, 1, 0, 'depth')
    assert mask_seed(7, 1, 0, 'noise') != mask_seed(8, 1, 0, 'noise')
    model = _build(masking=dict(d_min=1.5, d_max=1.5, schedule='constant'))
    x = _images(8)

    def masks(rank: int, iteration: int) -> torch.Tensor:
        hub.update_info('iter', iteration)
        with mock.patch.object(ema_teacher, 'get_rank', return_value=rank):
            return model.generate_masks(
                x, 0.5, generator=model._mask_generator(x.device),
                depth=model.masking.draw_depths(
                    0.5, 8, random.Random(model.mask_seed('depth')))).mask

    assert torch.equal(masks(1, 0), masks(1, 0))
    assert not torch.equal(masks(1, 0), masks(0, 7919))
    assert not torch.equal(masks(1, 5), masks(0, 5))


def test_masking_grid_size_may_be_given_as_a_list():
    # A config file may turn the tuple into a list; the grid is the same.
    model = _build(masking=dict(grid_size=[4, 4]))
    assert tuple(model.masking.grid_size) == (4, 4)
