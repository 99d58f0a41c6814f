# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Shared pieces of the transfer tests: the tiny ViT, pretraining, Runner.

The tiny encoder (32 dims, 4 layers, 4 heads, patch 8) is pretrained at
32 px by ``conftest.pretrained_checkpoint`` and transferred by every test.
"""
import copy
import os.path as osp
import uuid

import numpy as np
from mmengine.config import Config
from mmengine.runner import Runner
from PIL import Image
from runner_utils import restoring_mmengine_globals

import ehm_mm  # noqa: F401  (registers modules, torch.load allow-list)

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
PRETRAIN_CONFIG = osp.join(REPO_ROOT, 'configs', 'ehm_mae_vit-b.py')
EMBED_DIMS = 32
NUM_LAYERS = 4
NUM_HEADS = 4
FFN_CHANNELS = 128
PATCH_SIZE = 8
PRETRAIN_SIZE = 32
TINY_VIT = dict(
    embed_dims=EMBED_DIMS,
    num_layers=NUM_LAYERS,
    num_heads=NUM_HEADS,
    feedforward_channels=FFN_CHANNELS)


def write_images(folder: str, num: int, size=(40, 48), seed=0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(num):
        array = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
        Image.fromarray(array).save(osp.join(folder, f'img_{i}.jpg'))


def tiny_pretrain_cfg(data_root: str, work_dir: str) -> Config:
    """The tiny pretraining config: the shipped EHM-MAE config, shrunk."""
    cfg = Config.fromfile(PRETRAIN_CONFIG)
    cfg.merge_from_dict(
        dict(
            model=dict(
                backbone=dict(
                    arch=dict(_delete_=True, **TINY_VIT),
                    img_size=PRETRAIN_SIZE,
                    patch_size=PATCH_SIZE),
                neck=dict(
                    num_patches=(PRETRAIN_SIZE // PATCH_SIZE)**2,
                    patch_size=PATCH_SIZE,
                    embed_dim=EMBED_DIMS,
                    decoder_embed_dim=32,
                    decoder_depth=1,
                    decoder_num_heads=2),
                head=dict(patch_size=PATCH_SIZE),
                # a 4 x 4 grid has 4 merge levels; a fast EMA teacher so
                # that it differs from the student after 2 iterations
                masking=dict(d_max=2.0),
                ema_momentum=0.5),
            custom_hooks=[],
            optim_wrapper=dict(type='NonFiniteSkipOptimWrapper',
                               optimizer=dict(lr=1e-3)),
            param_scheduler=[],
            train_cfg=dict(
                _delete_=True, type='IterBasedTrainLoop', max_iters=2),
            default_hooks=dict(
                logger=dict(interval=1),
                checkpoint=dict(by_epoch=False, interval=2)),
            log_processor=dict(by_epoch=False),
            auto_scale_lr=dict(enable=False),
            resume=False))
    cfg.optim_wrapper.pop('loss_scale', None)
    cfg.train_dataloader = dict(
        batch_size=4,
        num_workers=0,
        persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=True),
        collate_fn=dict(type='default_collate'),
        dataset=dict(
            type='CustomDataset',
            data_root=data_root,
            with_label=False,
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(
                    type='RandomResizedCrop',
                    scale=PRETRAIN_SIZE,
                    crop_ratio_range=(0.5, 1.0),
                    backend='pillow',
                    interpolation='bicubic'),
                dict(type='PackInputs'),
            ]))
    cfg.work_dir = work_dir
    return cfg


def run_runner(cfg: Config, mode: str = 'train') -> Runner:
    """Build a Runner under a unique name and train (or test) with it."""
    cfg = copy.deepcopy(cfg)
    # Runners created in the same second would share (and mix up) their
    # default scope, logger and message hub without a unique name.
    cfg.experiment_name = f'test_{uuid.uuid4().hex[:8]}'
    cfg.randomness = dict(seed=0, deterministic=False)
    with restoring_mmengine_globals():
        runner = Runner.from_cfg(cfg)
        getattr(runner, mode)()
    return runner
