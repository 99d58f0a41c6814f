# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""EHMMAE(affinity_source='pixels'): trees from the inputs' pixel cues."""
import copy
import os.path as osp
from unittest import mock

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub
from mmpretrain.registry import MODELS
from runner_utils import runner_config, train_in_process

import ehm_mm  # noqa: F401
from ehm_mm.models.masking import cue_affinity, patch_cues

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
CFG = dict(
    type='EHMMAE',
    backbone=dict(
        type='EHMMAEViT',
        arch=dict(embed_dims=48, num_layers=2, num_heads=3,
                  feedforward_channels=96),
        img_size=64, patch_size=8),
    neck=dict(
        type='MAEPretrainDecoder', num_patches=64, patch_size=8, in_chans=3,
        embed_dim=48, decoder_embed_dim=32, decoder_depth=1,
        decoder_num_heads=2, mlp_ratio=2.),
    head=dict(
        type='MAEPretrainHead', norm_pix=True, patch_size=8,
        loss=dict(type='PixelReconstructionLoss', criterion='L2')),
    masking=dict(type='EvolvedHierarchicalMasking', d_min=0., d_max=4.),
    data_preprocessor=dict(
        type='SelfSupDataPreprocessor', mean=MEAN, std=STD, to_rgb=True),
    ema_momentum=0.25,
    affinity_source='pixels')
TINY = osp.join(
    osp.dirname(__file__), '..', '..', 'data', 'configs',
    'ehm_mae_tiny_cpu.py')


@pytest.fixture
def hub():
    hub = MessageHub.get_instance('test_ehm_mae_pixel_affinity')
    hub.update_info('iter', 10)
    hub.update_info('max_iters', 20)
    yield hub
    MessageHub._instance_dict.pop('test_ehm_mae_pixel_affinity')


def _model(**changes) -> torch.nn.Module:
    torch.manual_seed(0)
    model = MODELS.build(dict(copy.deepcopy(CFG), **changes))
    model.init_weights()
    return model.train()


def planted_images() -> np.ndarray:
    """Two colour halves (left/right, then top/bottom), mild noise."""
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 12, (2, 64, 64, 3)).astype(np.uint8)
    imgs[0, :, :24] += np.uint8([200, 40, 40])  # boundary inside patches 3
    imgs[0, :, 24:] += np.uint8([30, 60, 190])
    imgs[1, :32] += np.uint8([40, 180, 40])  # boundary between patches
    imgs[1, 32:] += np.uint8([180, 160, 30])
    return imgs


def normalise(imgs: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(imgs).float().permute(0, 3, 1, 2)
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(
        STD)[:, None, None]


def test_the_affinity_is_the_transforms_cue_affinity():
    model = _model()
    imgs = planted_images()
    affinity = model.teacher_affinity(normalise(imgs))
    expected = cue_affinity(patch_cues(imgs, 8))
    torch.testing.assert_close(affinity, expected, rtol=1e-4, atol=1e-5)
    # without normalisation in the preprocessor the inputs are pixels
    raw = _model(data_preprocessor=dict(type='SelfSupDataPreprocessor'))
    x = torch.from_numpy(imgs).float().permute(0, 3, 1, 2)
    torch.testing.assert_close(raw.teacher_affinity(x), expected,
                               rtol=1e-4, atol=1e-5)


def test_planted_halves_give_level_one_nodes_on_one_side(hub):
    model = _model()
    inputs = normalise(planted_images())
    # the boundary: image 0 splits at column 24 (inside patch column 3:
    # that column's patches are mixed, so only the clean columns are
    # checked), image 1 at row 32 (between patch rows 3 and 4)
    side = torch.zeros(2, 8, 8, dtype=torch.long)
    side[0, :, 3:] = 1
    side[1, 4:] = 1
    clean = torch.ones(2, 8, 8, dtype=torch.bool)
    clean[0, :, 3] = False
    samples = model.predict(inputs)
    for ancestors in (
            torch.stack([s.hierarchy_ancestors for s in samples]),
            model.masking.hierarchy(model.teacher_affinity(inputs))
            .ancestors.view(2, -1, 8, 8)):
        level1 = ancestors[:, 1]  # [B, 8, 8]
        for b in range(2):
            nodes = level1[b][clean[b]]
            sides = side[b][clean[b]]
            for node in nodes.unique():
                assert sides[nodes == node].unique().numel() == 1, (b, node)
            assert nodes.unique().numel() < nodes.numel()  # merges happened
    # depth-1 training masks are unions of those nodes
    masks = model.generate_masks(inputs, 0.5, depth=[1, 1])
    assert bool((masks.mask.sum(1) == 48).all())
    assert bool((masks.depth == 1).all())


def test_no_teacher_is_built_or_run(hub):
    model = _model()
    assert model.teacher is None and model.teacher_type is None
    assert not any(k.startswith('teacher') for k in model.state_dict())
    inputs = normalise(planted_images())
    with mock.patch('ehm_mm.models.selfsup.teacher_masks.attention_affinity',
                    side_effect=AssertionError('teacher attention')):
        losses = model.loss(inputs, [])
        model.predict(inputs)
    assert 'teacher_distance' not in losses
    assert float(losses['mask_depth']) == 2.0 and torch.isfinite(
        losses['loss'])
    # the teacher path is unchanged: it does run the attention
    teacher = _model(affinity_source='teacher')
    assert teacher.teacher is not None
    with mock.patch('ehm_mm.models.selfsup.teacher_masks.attention_affinity',
                    wraps=ehm_mm.attention_affinity) as attention:
        teacher.loss(inputs, [])
    assert attention.call_count == 1


@pytest.mark.parametrize('source', ['pixel', 'attention', None, 1])
def test_bad_affinity_source_raises(source):
    with pytest.raises(ValueError, match='model.affinity_source must be one'):
        _model(affinity_source=source)


def test_a_few_cpu_training_iterations(tmp_path):
    """The tiny CPU config with pixel trees: train, validate, checkpoint."""
    cfg = runner_config(TINY, str(tmp_path), 'ehm_pixels', iters=6)
    cfg.model.affinity_source = 'pixels'
    cfg.custom_hooks[1].interval = 6
    hub = train_in_process(cfg).message_hub
    losses = hub.get_scalar('train/loss').data[0]
    depth = hub.get_scalar('train/mask_depth').data[0]
    best_iou = hub.log_scalars['val/hierarchy/best_iou'].current()
    assert len(losses) == 6 and np.isfinite(losses).all()
    assert depth[0] == 0.0 and depth[-1] > 0  # the pixel trees were cut
    assert 0 < best_iou <= 100
    state = torch.load(
        osp.join(cfg.work_dir, 'iter_6.pth'), map_location='cpu',
        weights_only=False)['state_dict']
    assert not any(k.startswith('teacher') for k in state)
    assert any(k.startswith('backbone.') for k in state)
