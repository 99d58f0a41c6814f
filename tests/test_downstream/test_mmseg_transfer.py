# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""EHM checkpoint -> ehm2mmseg -> UPerNet (shipped config, shrunk) on ADE20K.

Also shows why ``StrictMAE`` exists: mmseg's own ``MAE`` backbone loads an
EHM checkpoint without complaint and without taking a single weight.
"""
import os
import os.path as osp
import re
import runpy
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.models import VisionTransformer
from mmseg.registry import MODELS
from PIL import Image
from transfer_utils import (
    EMBED_DIMS,
    NUM_HEADS,
    NUM_LAYERS,
    PATCH_SIZE,
    PRETRAIN_SIZE,
    REPO_ROOT,
    TINY_VIT,
    run_runner,
    write_images,
)

import ehm_mm.downstream.mmseg  # noqa: F401  (registers StrictMAE)
from ehm_mm.downstream import load_encoder

CONFIG = osp.join(REPO_ROOT, 'configs', 'benchmarks', 'mmseg',
                  'ehm-base_upernet_8xb2-amp-160k_ade20k-512x512.py')
CONVERTER = osp.join(REPO_ROOT, 'tools', 'model_converters', 'ehm2mmseg.py')
LAUNCHER = osp.join(REPO_ROOT, 'tools', 'benchmarks', 'mmseg', 'dist_train.sh')
NEW_PER_LAYER = ('gamma_1', 'gamma_2', 'attn.relative_position_bias_table',
                 'attn.relative_position_index')


def tiny_backbone(checkpoint: str, img_size: int, **kwargs) -> dict:
    cfg = dict(
        type='StrictMAE',
        img_size=(img_size, img_size),
        patch_size=PATCH_SIZE,
        embed_dims=EMBED_DIMS,
        num_layers=NUM_LAYERS,
        num_heads=NUM_HEADS,
        mlp_ratio=4,
        init_values=1.0,
        norm_cfg=dict(type='LN', eps=1e-6),
        out_indices=list(range(NUM_LAYERS)),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint))
    cfg.update(kwargs)
    return cfg


def test_strict_mae_computes_the_pretrained_encoder(pretrained_checkpoint):
    """Same features as the pretrained ViT: every weight in its place."""
    with DefaultScope.overwrite_default_scope('mmseg'):
        backbone = MODELS.build(
            tiny_backbone(pretrained_checkpoint, PRETRAIN_SIZE))
    backbone.init_weights()
    report = backbone.pretrained_report
    assert len(report.loaded) == 4 + 12 * NUM_LAYERS
    assert report.unexpected == ['ln1.weight', 'ln1.bias']

    vit = VisionTransformer(
        arch=TINY_VIT,
        img_size=PRETRAIN_SIZE,
        patch_size=PATCH_SIZE,
        out_indices=list(range(NUM_LAYERS)),
        out_type='featmap',
        final_norm=False,
        init_cfg=dict(
            type='Pretrained',
            checkpoint=pretrained_checkpoint,
            prefix='backbone.'))
    vit.init_weights()
    backbone.eval()
    vit.eval()
    image = torch.randn(2, 3, PRETRAIN_SIZE, PRETRAIN_SIZE)
    with torch.no_grad():
        ours, reference = backbone(image), vit(image)
    assert len(ours) == len(reference) == NUM_LAYERS
    for got, expected in zip(ours, reference):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_stock_mmseg_mae_loads_nothing_silently(pretrained_checkpoint):
    """The failure StrictMAE prevents (keep this: it documents why)."""
    cfg = tiny_backbone(pretrained_checkpoint, PRETRAIN_SIZE)
    cfg['type'] = 'MAE'
    with DefaultScope.overwrite_default_scope('mmseg'):
        stock = MODELS.build(cfg)
    stock.init_weights()  # no error, no warning
    encoder = load_encoder(pretrained_checkpoint).state_dict
    assert not torch.equal(stock.patch_embed.projection.weight,
                           encoder['patch_embed.projection.weight'])

    with DefaultScope.overwrite_default_scope('mmseg'):
        strict = MODELS.build(
            tiny_backbone(pretrained_checkpoint, PRETRAIN_SIZE))
    strict.init_weights()
    assert torch.equal(strict.patch_embed.projection.weight,
                       encoder['patch_embed.projection.weight'])


def test_strict_mae_refuses_an_incomplete_load(pretrained_checkpoint):
    wider = tiny_backbone(pretrained_checkpoint, PRETRAIN_SIZE)
    wider.update(num_layers=NUM_LAYERS + 1, out_indices=[NUM_LAYERS])
    with DefaultScope.overwrite_default_scope('mmseg'):
        backbone = MODELS.build(wider)
    with pytest.raises(ValueError, match=f'layers.{NUM_LAYERS}.ln1.weight'):
        backbone.init_weights()
    with DefaultScope.overwrite_default_scope('mmseg'):
        backbone = MODELS.build(
            tiny_backbone(
                pretrained_checkpoint, PRETRAIN_SIZE, allowed_unexpected=()))
    with pytest.raises(ValueError, match='ln1.weight'):
        backbone.init_weights()
    with DefaultScope.overwrite_default_scope('mmseg'):
        backbone = MODELS.build(
            tiny_backbone(pretrained_checkpoint, PRETRAIN_SIZE,
                          init_cfg=None))
    backbone.init_cfg = dict(type='Pretrained')
    with pytest.raises(ValueError, match='needs a "checkpoint"'):
        backbone.init_weights()


def write_ade20k(root: str, num: int = 2) -> None:
    """ADE20K layout: images/*.jpg and annotations/*.png (0 = ignore)."""
    rng = np.random.default_rng(0)
    for split in ('training', 'validation'):
        image_dir = osp.join(root, 'images', split)
        label_dir = osp.join(root, 'annotations', split)
        for folder in (image_dir, label_dir):
            os.makedirs(folder, exist_ok=True)
        write_images(image_dir, num, size=(64, 96))
        for i in range(num):
            label = rng.integers(0, 4, size=(64, 96), dtype=np.uint8)
            Image.fromarray(label).save(osp.join(label_dir, f'img_{i}.png'))


def tiny_cfg(checkpoint: str, data_root: str, work_dir: str) -> Config:
    """The shipped ADE20K config with a tiny ViT and 64 px crops."""
    cfg = Config.fromfile(CONFIG)
    bn = dict(type='BN', requires_grad=True)
    cfg.merge_from_dict(
        dict(
            model=dict(
                data_preprocessor=dict(size=(64, 64)),
                backbone=tiny_backbone(
                    checkpoint,
                    64,
                    drop_path_rate=cfg.model.backbone.drop_path_rate),
                neck=dict(embed_dim=EMBED_DIMS, norm_cfg=bn),
                decode_head=dict(
                    in_channels=[EMBED_DIMS] * 4, channels=32, norm_cfg=bn),
                auxiliary_head=dict(
                    in_channels=EMBED_DIMS, channels=16, norm_cfg=bn),
                test_cfg=dict(crop_size=(64, 64), stride=(43, 43))),
            optim_wrapper=dict(
                type='NonFiniteSkipOptimWrapper',
                paramwise_cfg=dict(num_layers=4)),
            train_cfg=dict(max_iters=1, val_interval=1),
            default_hooks=dict(logger=dict(interval=1)),
            work_dir=work_dir))
    cfg.optim_wrapper.pop('loss_scale')
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.update(num_workers=0, persistent_workers=False)
        loader.dataset.data_root = data_root
        for step in loader.dataset.pipeline:
            if step.type in ('RandomResize', 'Resize'):
                step.scale = (128, 64)
            if step.type == 'RandomCrop':
                step.crop_size = (64, 64)
    cfg.train_dataloader.batch_size = 2
    cfg.test_dataloader = cfg.val_dataloader
    return cfg


def test_ade20k_transfer(pretrained_checkpoint, tmp_path, capsys):
    converted = str(tmp_path / 'ehm_mmseg.pth')
    runpy.run_path(CONVERTER, run_name='converter')['main'](
        [pretrained_checkpoint, converted])
    printed = capsys.readouterr().out
    num_encoder = 4 + 12 * NUM_LAYERS + 2
    assert f'kept {num_encoder} encoder keys (ehm checkpoint)' in printed
    # decoder (with its mask token) and EMA teacher (+ its step counter)
    assert re.search(rf'dropped neck: \d+, teacher: {num_encoder + 1}\n',
                     printed)
    assert (f'loaded {num_encoder - 2} / missing {4 * NUM_LAYERS} / '
            'unexpected 2 / shape mismatch 0') in printed
    checkpoint = torch.load(converted, map_location='cpu')
    assert len(checkpoint['state_dict']) == num_encoder
    assert not any(key.startswith(('backbone.', 'neck.', 'teacher.'))
                   for key in checkpoint['state_dict'])

    data_root = str(tmp_path / 'ade')
    write_ade20k(data_root)
    cfg = tiny_cfg(converted, data_root, str(tmp_path / 'work_dir'))
    assert cfg.model.backbone.type == 'StrictMAE'
    runner = run_runner(cfg)

    report = runner.model.backbone.pretrained_report
    assert report.mismatched == []
    assert len(report.loaded) == num_encoder - 2
    assert report.unexpected == ['ln1.weight', 'ln1.bias']
    assert sorted(report.missing) == sorted(
        f'layers.{i}.{name}' for i in range(NUM_LAYERS)
        for name in NEW_PER_LAYER)
    # one training step ran, then validation (inference) produced mIoU
    assert runner.iter == 1
    assert 'val/mIoU' in runner.message_hub.log_scalars


def test_launcher_trains_from_the_checkpoint(pretrained_checkpoint,
                                             tmp_path, run_tool):
    """One GPU (here: CPU) run; PRETRAIN reaches the backbone's init_cfg."""
    data_root = str(tmp_path / 'ade')
    write_ade20k(data_root)
    cfg = tiny_cfg('pretrain/not_this_one.pth', data_root,
                   str(tmp_path / 'unused'))
    config = str(tmp_path / 'tiny_upernet.py')
    cfg.dump(config)
    work_dir = str(tmp_path / 'work_dir')
    proc = run_tool(
        ['bash', LAUNCHER, config, pretrained_checkpoint, '1',
         '--work-dir', work_dir],
        env=dict(PYTHON=sys.executable))
    log = proc.stdout + proc.stderr
    assert (f'StrictMAE: student encoder from {pretrained_checkpoint}'
            in log)
    assert 'loaded 52 / missing 16 / unexpected 2 / shape mismatch 0' in log
    last = torch.load(osp.join(work_dir, 'iter_1.pth'), map_location='cpu')
    assert last['meta']['iter'] == 1
