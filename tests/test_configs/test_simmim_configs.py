# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""EHM for pipeline-masked MIM: SimMIM (Swin, ViT) and MaskFeat configs.

Every shipped config is compared with the mmpretrain config it inherits
(only the model, the mask step of the pipeline and the hooks may differ),
trained in a tiny version for 2 iterations on CPU, and its checkpoint is
loaded by the matching fine-tuning config with every key accounted for.
"""
import copy
import os.path as osp

import numpy as np
import pytest
import torch
from config_utils import plain, shrink, write_images
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS
from runner_utils import train_in_process

import ehm_mm  # noqa: F401
from ehm_mm.downstream import account_keys, load_encoder

CONFIG_DIR = osp.join(osp.dirname(__file__), '..', '..', 'configs')
SIMMIM = 'mmpretrain::simmim/simmim_swin-base-w6_8xb256-amp-coslr-100e_in1k-192px.py'  # noqa: E501
MAE = 'mmpretrain::mae/mae_vit-base-p16_8xb512-amp-coslr-300e_in1k.py'
MASKFEAT = 'mmpretrain::maskfeat/maskfeat_vit-base-p16_8xb256-amp-coslr-300e_in1k.py'  # noqa: E501
CONFIGS = {
    'simmim-swin-pix':
    ('simmim/simmim_swin-base-w6_ehm-pix_8xb256-amp-coslr-100e_in1k-192px.py',
     SIMMIM),
    'ehm-simmim-swin':
    ('simmim/ehm-simmim_swin-base-w6_8xb256-amp-coslr-100e_in1k-192px.py',
     SIMMIM),
    'ehm-simmim-vit':
    ('simmim/ehm-simmim_vit-base-p16_8xb256-amp-coslr-100e_in1k.py', SIMMIM),
    'maskfeat-vit-pix':
    ('maskfeat/maskfeat_vit-base-p16_ehm-pix_8xb256-amp-coslr-300e_in1k.py',
     MASKFEAT),
    'mae-vit-pix':
    ('mae/mae_vit-base-p16_ehm-pix_8xb512-amp-coslr-300e_in1k.py', MAE),
}
MASK_STEPS = ('SimMIMMaskGenerator', 'BEiTMaskGenerator',
              'EvolvedHierarchicalMaskGenerator')
TINY_SWIN = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=16, depths=[1, 1, 1, 1],
                  num_heads=[1, 1, 2, 2]),
        img_size=128,
        stage_cfgs=dict(block_cfgs=dict(window_size=4))))
TINY_VIT_ARCH = dict(
    _delete_=True,
    embed_dims=32,
    num_layers=2,
    num_heads=2,
    feedforward_channels=64)
# name: (model changes, image size, mask generator changes)
TINY = {
    'simmim-swin-pix': (dict(**TINY_SWIN, neck=dict(in_channels=128)), 128,
                        dict(d_max=2.0)),
    'ehm-simmim-swin': (dict(**TINY_SWIN, neck=dict(in_channels=128),
                             masking=dict(d_max=2.0)), 128, None),
    'ehm-simmim-vit': (dict(
        backbone=dict(arch=TINY_VIT_ARCH, img_size=64, patch_size=8),
        neck=dict(in_channels=32, encoder_stride=8),
        head=dict(patch_size=8),
        mask_patch_size=8,
        masking=dict(d_max=3.0)), 64, None),
    # MaskFeat's HOG target needs a 14 x 14 patch grid: 112 px, patch 8,
    # one 8 px HOG cell per patch (3 channels x 9 bins = 27 targets).
    'maskfeat-vit-pix': (dict(
        backbone=dict(arch=TINY_VIT_ARCH, img_size=112, patch_size=8),
        neck=dict(in_channels=32, out_channels=27)), 112,
        dict(mask_patch_size=8, model_patch_size=8)),
    'mae-vit-pix': (dict(
        backbone=dict(arch=TINY_VIT_ARCH, img_size=32, patch_size=8),
        neck=dict(num_patches=16, patch_size=8, embed_dim=32,
                  decoder_embed_dim=32, decoder_depth=1,
                  decoder_num_heads=2),
        head=dict(patch_size=8)), 32,
        dict(mask_patch_size=8, model_patch_size=8, d_max=2.0)),
}


def load(name: str) -> Config:
    return Config.fromfile(osp.join(CONFIG_DIR, CONFIGS[name][0]))


@pytest.mark.parametrize('name', list(CONFIGS))
def test_only_masking_differs_from_mmpretrain(name):
    ours, theirs = plain(load(name)), plain(get_config(CONFIGS[name][1]))
    assert ours.pop('custom_imports') == dict(
        imports=['ehm_mm'], allow_failed_imports=False)
    model_a, model_b = ours.pop('model'), theirs.pop('model')
    hooks = [h['type'] for h in ours.pop('custom_hooks', [])]
    # The divergence guard (docs/en/reliability.md).
    assert ours['optim_wrapper'].pop(
        'type') == 'NonFiniteSkipAmpOptimWrapper'
    assert theirs['optim_wrapper'].pop('type') == 'AmpOptimWrapper'
    assert ours['default_hooks'].pop('divergence_guard')[
        'type'] == 'DivergenceGuardHook'
    steps_a = ours['train_dataloader']['dataset'].pop('pipeline')
    steps_b = theirs['train_dataloader']['dataset'].pop('pipeline')
    assert ours.pop('train_pipeline') == steps_a
    assert theirs.pop('train_pipeline') == steps_b
    generators = [s for s in steps_a if s['type'] in MASK_STEPS]
    if name == 'mae-vit-pix':  # MAE taking the masks from the data
        assert model_a.pop('type') == 'PipelineMaskMAE'
        assert model_b.pop('type') == 'MAE'
        assert model_a['backbone'].pop('type') == 'EHMMAEViT'
        assert model_b['backbone'].pop('type') == 'MAEViT'
    if name.endswith('-pix'):  # the transform arm: same model
        assert model_a == model_b and hooks == ['MaskProgressHook']
        # the templates of configs/_base_/ehm_pixel_masks.py
        assert ours.pop('ehm_pixel_mask_generator') == dict(
            type='EvolvedHierarchicalMaskGenerator', d_min=0.0,
            schedule='linear', batched=True)
        assert ours.pop('ehm_pixel_pack_inputs') == dict(
            type='PackInputs', algorithm_keys=['mask_request'])
        assert ours.pop('ehm_mask_collate') == dict(
            _delete_=True, type='evolved_mask_collate')
        assert ours.pop('ehm_checkpoint_hook') == dict(
            type='AtomicCheckpointHook')
        assert ours.pop('ehm_divergence_guard_hook') == dict(
            type='DivergenceGuardHook', max_consecutive_nonfinite=3)
        assert ours.pop('ehm_train_sampler')['type'] == 'SeededAugmentSampler'
        assert [g['type'] for g in generators] == [
            'EvolvedHierarchicalMaskGenerator']
    else:  # the teacher arm: no mask step, EHMSimMIM
        assert model_a.pop('type') == 'EHMSimMIM' and not generators
        assert model_b.pop('type') == 'SimMIM'
        assert hooks == ['HierarchyVisualizationHook']
        for key in ('masking', 'mask_patch_size', 'affinity', 'attn_layers',
                    'teacher', 'ema_momentum'):
            model_a.pop(key, None)
        if name == 'ehm-simmim-vit':
            assert model_a.pop('backbone')['type'] == 'MaskFeatViT'
            model_b.pop('backbone')
            # the no-decay keys name ViT's parameters instead of Swin's
            optim_a, optim_b = ours.pop('optim_wrapper'), theirs.pop(
                'optim_wrapper')
            keys_a = optim_a['paramwise_cfg'].pop('custom_keys')
            optim_b['paramwise_cfg'].pop('custom_keys')
            assert optim_a == optim_b
            assert set(keys_a) == {'ln', 'bias', 'pos_embed', 'cls_token',
                                   'mask_token'}
            assert model_a.pop('neck') == dict(
                type='SimMIMLinearDecoder', in_channels=768,
                encoder_stride=16)
            assert model_a.pop('head')['patch_size'] == 16
            model_b.pop('neck'), model_b.pop('head')
        assert model_a == model_b
    # the rest of the pipeline is mmpretrain's (crop size for ViT 224 px)
    rest_a = [s for s in steps_a if s['type'] not in MASK_STEPS]
    rest_b = [s for s in steps_b if s['type'] not in MASK_STEPS]
    if name == 'ehm-simmim-vit':
        rest_b[1]['scale'] = 224
    loader_a, loader_b = ours.pop('train_dataloader'), theirs.pop(
        'train_dataloader')
    loader_b.pop('collate_fn')
    if name.endswith('-pix'):  # batched: trees of a batch in the collate
        assert generators[0]['batched'] is True
        assert rest_a[-1] == dict(type='PackInputs',
                                  algorithm_keys=['mask_request'])
        rest_a[-1] = dict(type='PackInputs')
        assert loader_a.pop('collate_fn') == dict(
            type='evolved_mask_collate')
        # mmpretrain's sampler, seeded per draw: exact mask progress
        assert loader_a.pop('sampler') == dict(
            type='SeededAugmentSampler', sampler=loader_b.pop('sampler'))
    else:
        assert loader_a.pop('collate_fn') == dict(type='default_collate')
    assert rest_a == rest_b
    assert loader_a == loader_b
    # Checkpoints are saved atomically (docs/en/reliability.md).
    assert ours['default_hooks']['checkpoint'].pop(
        'type') == 'AtomicCheckpointHook'
    assert theirs['default_hooks']['checkpoint'].pop(
        'type') == 'CheckpointHook'
    assert ours == theirs


@pytest.mark.parametrize('name, grids', [
    ('ehm-simmim-swin', ((48, 48), (6, 6))),
    ('ehm-simmim-vit', ((14, 14), (14, 14))),
])
def test_full_size_models_build(name, grids):
    cfg = load(name)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    assert (model.token_grid, model.mask_grid) == grids
    assert not any(p.requires_grad for p in model.teacher.parameters())


def test_pixel_generators_fit_their_models():
    swin = load('simmim-swin-pix').train_pipeline[3]
    assert (swin.input_size, swin.mask_patch_size,
            swin.model_patch_size) == (192, 32, 4)
    maskfeat = load('maskfeat-vit-pix').train_pipeline[3]
    assert (maskfeat.input_size, maskfeat.mask_patch_size,
            maskfeat.num_masking_patches) == (224, 16, 78)


def tiny_cfg(name: str, data_root: str, work_dir: str) -> Config:
    model, size, generator = TINY[name]
    return shrink(load(name), model, size, generator, data_root, work_dir)


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory) -> dict:
    """Train every tiny config for 2 iterations; their checkpoints."""
    root = tmp_path_factory.mktemp('ehm_simmim')
    write_images(root)
    paths, logs = {}, {}
    for name in CONFIGS:
        work_dir = str(root / name)
        runner = train_in_process(tiny_cfg(name, str(root), work_dir))
        assert runner.iter == 2
        logs[name] = runner.message_hub.log_scalars
        paths[name] = osp.join(work_dir, 'iter_2.pth')
        assert osp.isfile(paths[name])
    return paths, logs


@pytest.mark.parametrize('name', list(CONFIGS))
def test_tiny_versions_train(name, checkpoints):
    _, logs = checkpoints
    loss = logs[name]['train/loss'].current()
    assert np.isfinite(loss)
    if not name.endswith('-pix'):
        # the last of 2 iterations: d(1/2) = d_max / 2 (Swin 1, ViT 1.5,
        # stochastically rounded per image)
        depth = logs[name]['train/mask_depth'].current()
        assert depth == 1.0 if 'swin' in name else depth in (1.0, 1.5, 2.0)
    state = torch.load(checkpoints[0][name], map_location='cpu')
    groups = {k.split('.')[0] for k in state['state_dict']}
    if name.endswith('-pix'):
        assert 'teacher' not in groups
    else:
        assert 'teacher' in groups


FINETUNE = {
    'swin':
    'simmim/benchmarks/swin-base-w6_ehm-pre_8xb256-coslr-100e_in1k-192px.py',
    'vit':
    'maskfeat/benchmarks/vit-base-p16_ehm-pre_8xb256-coslr-100e_in1k.py',
    'mae':
    'benchmarks/mmpretrain/vit-base-p16_ehm-pre_8xb128-coslr-100e_in1k.py',
}


@pytest.mark.parametrize('name, finetune, backbone', [
    ('simmim-swin-pix', 'swin', TINY_SWIN['backbone']),
    ('ehm-simmim-swin', 'swin', TINY_SWIN['backbone']),
    ('ehm-simmim-vit', 'vit',
     dict(arch=TINY_VIT_ARCH, img_size=64, patch_size=8)),
    ('maskfeat-vit-pix', 'vit',
     dict(arch=TINY_VIT_ARCH, img_size=112, patch_size=8)),
    ('mae-vit-pix', 'mae',
     dict(arch=TINY_VIT_ARCH, img_size=32, patch_size=8)),
])
def test_finetune_config_loads_every_key(name, finetune, backbone,
                                         checkpoints):
    path = checkpoints[0][name]
    cfg = Config.fromfile(osp.join(CONFIG_DIR, FINETUNE[finetune]))
    assert cfg.model.backbone.init_cfg.prefix == 'backbone.'
    cfg.merge_from_dict(
        dict(
            model=dict(
                backbone=dict(**copy.deepcopy(backbone),
                              init_cfg=dict(checkpoint=path)),
                head=dict(num_classes=2, in_channels=128 if finetune ==
                          'swin' else 32))))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    encoder = load_encoder(path).state_dict
    report = account_keys(model.backbone.state_dict(), encoder)
    assert report.mismatched == []
    if finetune == 'swin':
        assert report.missing == [] and report.unexpected == ['mask_token']
    elif finetune == 'mae':
        assert report.missing == ['ln2.weight', 'ln2.bias']
        assert report.unexpected == ['ln1.weight', 'ln1.bias']
    else:  # fine-tuning pools the tokens: new ln2, unused final ln1
        assert report.missing == ['ln2.weight', 'ln2.bias']
        assert report.unexpected == ['mask_token', 'ln1.weight', 'ln1.bias']
    state = model.backbone.state_dict()
    for key in report.loaded:
        assert torch.equal(state[key], encoder[key]), key
