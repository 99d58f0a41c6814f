# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Every pretraining config trains under a stock mmengine Runner.

``Runner.from_cfg(Config.fromfile(cfg))`` with nothing of ours called in
between: the configs' ``collate_fn`` keeps the ``_scope_`` tag that mmengine
writes into what a config inherits through ``mmpretrain::`` (or
``ehm_mm::``), and ``import ehm_mm`` (the configs' ``custom_imports``) makes
the registered collate functions accept it. Each config's tiny version
trains 2 iterations on CPU.
"""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from config_utils import shrink, write_images
from mmengine.config import Config
from mmengine.registry import FUNCTIONS
from runner_utils import train_in_process
from test_simmim_configs import CONFIGS as PIPELINE_CONFIGS
from test_simmim_configs import TINY as PIPELINE_TINY

from ehm_mm.utils import ScopeTolerantCollate

CONFIG_DIR = osp.abspath(osp.join(osp.dirname(__file__), '..', '..',
                                  'configs'))
#: The EHM-MAE configs (ViT-B/L schedules, the demo, the masking study).
#: The FSDP2 configs (``*_fsdp.py``) need a distributed launch and their
#: own runner: tests/test_models/test_wrappers and test_fsdp_configs.
EHM_MAE_CONFIGS = sorted(
    [osp.basename(p) for p in glob.glob(osp.join(CONFIG_DIR, 'ehm_mae_*.py'))
     if not p.endswith('_fsdp.py')]
    + [osp.join('study', osp.basename(p))
       for p in glob.glob(osp.join(CONFIG_DIR, 'study', '*.py'))])
TINY_EHM_MAE = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=32, num_layers=2, num_heads=2,
                  feedforward_channels=64),
        img_size=32,
        patch_size=8),
    neck=dict(num_patches=16, patch_size=8, embed_dim=32,
              decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2),
    head=dict(patch_size=8),
    masking=dict(d_max=2.0))
#: config file: (model changes, image size, mask generator changes)
TINY = {name: (TINY_EHM_MAE, 32, None) for name in EHM_MAE_CONFIGS}
TINY.update({PIPELINE_CONFIGS[name][0]: PIPELINE_TINY[name]
             for name in PIPELINE_CONFIGS})


def test_every_pretraining_config_is_listed():
    assert len(EHM_MAE_CONFIGS) == 14  # 8 ViT-B/L + demo + 5 study
    assert len(TINY) == len(EHM_MAE_CONFIGS) + 5


@pytest.fixture(scope='module')
def image_root(tmp_path_factory) -> str:
    return write_images(tmp_path_factory.mktemp('stock_runner'))


@pytest.mark.parametrize('config', sorted(TINY))
def test_tiny_version_trains_with_a_stock_runner(config, image_root,
                                                 tmp_path):
    cfg = Config.fromfile(osp.join(CONFIG_DIR, config))
    collate_cfg = cfg.train_dataloader.collate_fn
    if config.startswith('ehm_mae_'):
        # inherited from mmpretrain's MAE recipe: tagged, not restated
        assert collate_cfg == dict(type='default_collate',
                                   _scope_='mmpretrain')
    assert isinstance(FUNCTIONS.get(collate_cfg.type), ScopeTolerantCollate)
    model, size, generator = TINY[config]
    shrink(cfg, model, size, generator, image_root, str(tmp_path))
    runner = train_in_process(cfg)
    assert runner.iter == 2
    assert np.isfinite(runner.message_hub.log_scalars['train/loss'].current())
    assert osp.isfile(osp.join(str(tmp_path), 'iter_2.pth'))


def test_the_tag_is_dropped_and_nothing_else():
    collate = FUNCTIONS.get('default_collate')
    batch = [torch.ones(2), torch.zeros(2)]
    assert torch.equal(collate(batch, _scope_='mmpretrain'),
                       torch.stack(batch))
    assert torch.equal(collate(batch), torch.stack(batch))
    with pytest.raises(TypeError, match='unexpected keyword'):
        collate(batch, _scope_='mmpretrain', size=3)
