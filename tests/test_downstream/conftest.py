# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Fixtures of the transfer tests: a tiny EHM checkpoint and image writer.

``pretrained_checkpoint`` pretrains a tiny EHM-MAE (the shipped
``configs/ehm_mae_vit-b.py`` with a 32-dim, 4-layer ViT, patch 8, 32 px)
for 2 iterations with mmengine's Runner and returns the checkpoint it
wrote: a real mmengine checkpoint (``meta``, ``state_dict``, ``optimizer``,
``message_hub``) whose state dict holds the student ``backbone.*``, the
decoder ``neck.*`` (including ``neck.mask_token``) and the EMA teacher
``teacher.module.*`` / ``teacher.steps``.
"""
import os.path as osp

import pytest
import torch
from transfer_utils import run_runner, tiny_pretrain_cfg, write_images


@pytest.fixture(scope='session')
def pretrained_checkpoint(tmp_path_factory) -> str:
    """Path of a tiny 2-iteration pretraining checkpoint."""
    root = tmp_path_factory.mktemp('pretrain')
    data_root = root / 'images'
    data_root.mkdir()
    write_images(str(data_root), 8)
    cfg = tiny_pretrain_cfg(str(data_root), str(root / 'work_dir'))
    run_runner(cfg)
    path = str(root / 'work_dir' / 'iter_2.pth')
    assert osp.isfile(path)
    checkpoint = torch.load(path, map_location='cpu')
    assert checkpoint['meta']['iter'] == 2
    state_dict = checkpoint['state_dict']
    assert 'neck.mask_token' in state_dict
    # the EMA teacher is a different encoder than the student
    key = 'layers.0.attn.qkv.weight'
    assert not torch.equal(state_dict[f'teacher.module.{key}'],
                           state_dict[f'backbone.{key}'])
    return path

