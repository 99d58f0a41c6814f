# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The FSDP2 configs are the EHM-MAE configs plus sharding, nothing else.

``configs/ehm_mae_vit-l_fsdp.py`` is ``configs/ehm_mae_vit-l.py`` and
``configs/ehm_mae_vit-h_fsdp.py`` mmpretrain's MAE ViT-H/14 recipe with
the EHM model; both add the runner, the wrapper and a plain optimizer
wrapper with the recipe's optimizer.
"""
import os.path as osp

from config_utils import plain
from mmengine.config import Config
from mmengine.hub import get_config

import ehm_mm  # noqa: F401

CONFIG_DIR = osp.join(osp.dirname(__file__), '..', '..', 'configs')
WRAPPER = dict(
    type='FSDP2Wrapper',
    mixed_precision=dict(param_dtype='bfloat16', reduce_dtype='float32'),
    activation_checkpointing=False,
    reshard_after_forward=True)


def _strip_sharding(cfg: dict, recipe: dict) -> None:
    """Check and remove what sharding adds; the recipe's AMP wrapper too."""
    assert cfg.pop('runner_type') == 'FSDP2Runner'
    assert cfg.pop('model_wrapper_cfg') == WRAPPER
    ours, theirs = cfg.pop('optim_wrapper'), recipe.pop('optim_wrapper')
    assert theirs.pop('type') in ('AmpOptimWrapper',
                                  'NonFiniteSkipAmpOptimWrapper')
    theirs.pop('loss_scale', None)  # MAE's recipes set it, SimMIM's not
    assert ours.pop('type') == 'NonFiniteSkipOptimWrapper'
    assert ours == theirs


def test_vit_l_fsdp_is_vit_l_plus_sharding():
    ours = plain(Config.fromfile(osp.join(CONFIG_DIR,
                                          'ehm_mae_vit-l_fsdp.py')))
    base = plain(Config.fromfile(osp.join(CONFIG_DIR, 'ehm_mae_vit-l.py')))
    _strip_sharding(ours, base)
    assert ours == base


def test_vit_h_fsdp_is_the_recipe_with_the_ehm_model():
    ours = plain(Config.fromfile(osp.join(CONFIG_DIR,
                                          'ehm_mae_vit-h_fsdp.py')))
    recipe = plain(get_config(
        'mmpretrain::mae/mae_vit-huge-p14_8xb512-amp-coslr-1600e_in1k.py'))
    _strip_sharding(ours, recipe)
    model, theirs = ours.pop('model'), recipe.pop('model')
    assert model['type'] == 'EHMMAE' and theirs['type'] == 'MAE'
    assert model['backbone']['type'] == 'EHMMAEViT'
    assert model['backbone']['arch'] == theirs['backbone']['arch'] == 'h'
    assert model['backbone']['patch_size'] == 14
    assert model['neck'] == theirs['neck'] and model['head'] == theirs['head']
    # the EHM pieces, as in configs/ehm_mae_vit-l.py
    vit_l = plain(Config.fromfile(osp.join(CONFIG_DIR, 'ehm_mae_vit-l.py')))
    for key in ('custom_imports', 'custom_hooks', 'ehm_mae_model',
                'ehm_train_sampler', 'ehm_checkpoint_hook',
                'ehm_divergence_guard_hook'):
        assert ours.pop(key) == vit_l[key]
    assert ours['default_hooks'].pop('divergence_guard') == \
        vit_l['default_hooks']['divergence_guard']
    assert ours['train_dataloader'].pop('sampler')['type'] == \
        'SeededAugmentSampler'
    recipe['train_dataloader'].pop('sampler')
    assert ours['default_hooks']['checkpoint'].pop('type') == \
        'AtomicCheckpointHook'
    recipe['default_hooks']['checkpoint'].pop('type')
    assert ours == recipe


def test_simmim_vit_l_fsdp_is_simmim_vit_b_plus_sharding_and_vit_l():
    ours = plain(Config.fromfile(osp.join(
        CONFIG_DIR, 'simmim',
        'ehm-simmim_vit-large-p16_8xb256-fsdp-coslr-100e_in1k.py')))
    base = plain(Config.fromfile(osp.join(
        CONFIG_DIR, 'simmim',
        'ehm-simmim_vit-base-p16_8xb256-amp-coslr-100e_in1k.py')))
    # SimMIM's recipe clips the gradient norm: kept (FSDP2 clips the
    # sharded gradients, tests/test_models/test_wrappers)
    assert ours['optim_wrapper']['clip_grad'] == dict(max_norm=5.0)
    _strip_sharding(ours, base)
    model, theirs = ours.pop('model'), base.pop('model')
    assert model['type'] == theirs['type'] == 'EHMSimMIM'
    assert model['backbone'].pop('arch') == 'l'
    assert theirs['backbone'].pop('arch') == 'b'
    assert model['neck'].pop('in_channels') == 1024
    assert theirs['neck'].pop('in_channels') == 768
    assert model == theirs
    assert ours == base
