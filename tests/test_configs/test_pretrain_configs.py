# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The EHM-MAE pretraining configs change only what EHM needs.

Each ``configs/ehm_mae_vit-{b,l}[_<E>e].py`` is compared with the matching
mmpretrain MAE config: everything but the EHM model fields (and the EHM
pieces of ``configs/_base_/ehm_mae.py``) must be equal, so schedules, data
and runtime stay mmpretrain's.
"""
import copy
import os.path as osp

import pytest
import torch
from config_utils import plain
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS

import ehm_mm  # noqa: F401

CONFIG_DIR = osp.join(osp.dirname(__file__), '..', '..', 'configs')
EHM_MODEL_KEYS = ('masking', 'teacher', 'ema_momentum', 'attn_layers')
EHM_TOP_KEYS = ('custom_imports', 'custom_hooks', 'ehm_mae_model')
PAIRS = [(f'ehm_mae_vit-{arch}{suffix}.py',
          f'mmpretrain::mae/mae_vit-{name}-p16_8xb512-amp-coslr-{epochs}e'
          '_in1k.py') for arch, name in (('b', 'base'), ('l', 'large'))
         for suffix, epochs in (('', 300), ('_400e', 400), ('_800e', 800),
                                ('_1600e', 1600))]


@pytest.mark.parametrize('ours, theirs', PAIRS)
def test_only_the_model_differs_from_mmpretrain(ours, theirs):
    a = plain(Config.fromfile(osp.join(CONFIG_DIR, ours)))
    b = plain(get_config(theirs))
    model_a, model_b = a.pop('model'), b.pop('model')
    assert model_a['type'] == 'EHMMAE' and model_b['type'] == 'MAE'
    assert model_a['backbone'].pop('type') == 'EHMMAEViT'
    assert model_b['backbone'].pop('type') == 'MAEViT'
    assert model_a['masking']['type'] == 'EvolvedHierarchicalMasking'
    assert model_a['teacher'] == 'ema'
    for key in ('type', ) + EHM_MODEL_KEYS:
        model_a.pop(key, None)
    model_b.pop('type')
    assert model_a == model_b
    assert a.pop('custom_imports') == dict(
        imports=['ehm_mm'], allow_failed_imports=False)
    assert [h['type'] for h in a.pop('custom_hooks')
            ] == ['HierarchyVisualizationHook']
    assert a.pop('ehm_mae_model')['type'] == 'EHMMAE'
    # Reliability (docs/en/reliability.md): augmentation seeded per draw
    # around mmpretrain's sampler, and atomic checkpoint saving.
    assert a['train_dataloader'].pop('sampler') == dict(
        type='SeededAugmentSampler',
        sampler=b['train_dataloader'].pop('sampler'))
    assert a['default_hooks']['checkpoint'].pop(
        'type') == 'AtomicCheckpointHook'
    assert b['default_hooks']['checkpoint'].pop('type') == 'CheckpointHook'
    assert a.pop('ehm_train_sampler')['type'] == 'SeededAugmentSampler'
    assert a.pop('ehm_checkpoint_hook') == dict(type='AtomicCheckpointHook')
    # The divergence guard.
    guard = dict(type='DivergenceGuardHook', max_consecutive_nonfinite=3)
    assert a['default_hooks'].pop('divergence_guard') == guard
    assert a.pop('ehm_divergence_guard_hook') == guard
    assert a['optim_wrapper'].pop('type') == 'NonFiniteSkipAmpOptimWrapper'
    assert b['optim_wrapper'].pop('type') == 'AmpOptimWrapper'
    assert a == b


def test_vit_b_builds_with_a_14x14_grid():
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'ehm_mae_vit-b.py'))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    assert model.grid_size == (14, 14)
    assert model.masking.depth_at(1.0) == 5.0
    assert model.teacher.module.embed_dims == 768
    assert not any(p.requires_grad for p in model.teacher.parameters())


def test_depth_beyond_the_tree_fails_at_build():
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'ehm_mae_vit-tiny_demo.py'))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.masking.d_max = 7.0  # an 8 x 8 grid guarantees 6 levels
    with pytest.raises(ValueError, match='model.masking: d_max=7'):
        MODELS.build(model_cfg)
    model_cfg.masking.d_max = 4.0
    model_cfg.masking.mask_ratio = 1.2
    with pytest.raises(ValueError, match='mask_ratio'):
        MODELS.build(model_cfg)


def test_another_project_can_inherit(tmp_path):
    """A config elsewhere inherits ours by path and changes the schedule."""
    base = osp.abspath(osp.join(CONFIG_DIR, 'ehm_mae_vit-tiny_demo.py'))
    child = tmp_path / 'my_project_ehm.py'
    child.write_text(f"_base_ = '{base}'\n"
                     "model = dict(masking=dict(schedule='cosine'))\n"
                     "train_cfg = dict(max_epochs=2)\n")
    cfg = Config.fromfile(str(child))
    assert cfg.custom_imports.imports == ['ehm_mm']
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.train_cfg.max_epochs == 2
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    assert model.masking.depth_schedule.schedule == 'cosine'
    assert model(torch.zeros(2, 3, 64, 64), mode='tensor')[0].shape == (
        2, 65, 96)
