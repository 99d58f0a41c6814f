# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Every training config of the project saves checkpoints atomically, and
every pretraining config seeds its augmentation per draw."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

CONFIG_DIR = osp.abspath(osp.join(osp.dirname(__file__), '..', '..',
                                  'configs'))
CONFIGS = sorted(
    osp.relpath(path, CONFIG_DIR)
    for path in glob.glob(osp.join(CONFIG_DIR, '**', '*.py'), recursive=True)
    if '_base_' not in path.split(osp.sep))


def _load(name: str) -> Config:
    return Config.fromfile(
        osp.join(CONFIG_DIR, name), import_custom_modules=False)


def test_the_configs_are_found():
    assert 'ehm_mae_vit-tiny_demo.py' in CONFIGS
    assert len(CONFIGS) >= 20


@pytest.mark.parametrize('name', CONFIGS)
def test_training_configs_save_atomically(name):
    cfg = _load(name)
    if cfg.get('train_cfg') is None:
        assert cfg.get('train_dataloader') is None, name
        return  # test-only (retrieval) configs save nothing
    assert cfg.default_hooks.checkpoint.type == 'AtomicCheckpointHook'


@pytest.mark.parametrize(
    'name', [n for n in CONFIGS if osp.basename(n).startswith('ehm_mae_')])
def test_pretraining_configs_seed_augmentation_per_draw(name):
    sampler = _load(name).train_dataloader.sampler
    assert sampler.type == 'SeededAugmentSampler'
    assert sampler.sampler == dict(type='DefaultSampler', shuffle=True)


@pytest.mark.parametrize('name', CONFIGS)
def test_training_configs_guard_against_divergence(name):
    """A non-finite loss skips its step (the optimizer wrapper) and a run
    that keeps diverging stops (the hook)."""
    cfg = _load(name)
    if cfg.get('train_cfg') is None:
        return  # test-only (retrieval) configs train nothing
    assert cfg.optim_wrapper.type in ('NonFiniteSkipOptimWrapper',
                                      'NonFiniteSkipAmpOptimWrapper'), name
    assert cfg.default_hooks.divergence_guard.type == 'DivergenceGuardHook'
    if cfg.optim_wrapper.type == 'NonFiniteSkipOptimWrapper' and (
            'benchmarks' in name):
        # the downstream fine-tuning recipes (AdamW, no clipping, no
        # scaler) skip on the device with fused AdamW
        assert cfg.optim_wrapper.optimizer.fused is True
