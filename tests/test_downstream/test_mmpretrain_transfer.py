# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""EHM checkpoint -> ehm2mmpretrain -> ImageNet fine-tuning / linear probe.

mmpretrain's ``VisionTransformer`` shares the pretraining backbone's key
layout, so the shipped configs load through mmengine's ``Pretrained``
initializer with ``prefix='backbone.'``. The tests check what that load
really takes, weight by weight.
"""
import os
import os.path as osp
import runpy

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS
from transfer_utils import (
    EMBED_DIMS,
    NUM_LAYERS,
    PATCH_SIZE,
    PRETRAIN_SIZE,
    REPO_ROOT,
    TINY_VIT,
    run_runner,
    write_images,
)

from ehm_mm.downstream import account_keys, load_encoder
from ehm_mm.downstream.converters import mmpretrain_vit_allowed_keys

CONFIG_DIR = osp.join(REPO_ROOT, 'configs', 'benchmarks', 'mmpretrain')
FINETUNE = osp.join(CONFIG_DIR,
                    'vit-base-p16_ehm-pre_8xb128-coslr-100e_in1k.py')
LINEAR = osp.join(CONFIG_DIR,
                  'vit-base-p16_ehm-pre_8xb2048-linear-coslr-90e_in1k.py')
CONVERTER = osp.join(REPO_ROOT, 'tools', 'model_converters',
                     'ehm2mmpretrain.py')
NUM_ENCODER_KEYS = 4 + 12 * NUM_LAYERS + 2


@pytest.fixture(scope='module')
def class_folder(tmp_path_factory) -> str:
    """ImageNet-style folders: {train,val}/class_{0,1}/*.jpg."""
    root = tmp_path_factory.mktemp('classification')
    for split in ('train', 'val'):
        for label in range(2):
            folder = root / split / f'class_{label}'
            os.makedirs(folder)
            write_images(str(folder), 1, size=(40, 48), seed=label)
    return str(root)


@pytest.fixture(scope='module')
def converted(pretrained_checkpoint, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp('converted') / 'ehm_mmpretrain.pth')
    runpy.run_path(CONVERTER, run_name='converter')['main'](
        [pretrained_checkpoint, path])
    return path


def test_converter_output(converted, capsys, pretrained_checkpoint):
    runpy.run_path(CONVERTER, run_name='converter')['main'](
        [pretrained_checkpoint, converted])
    printed = capsys.readouterr().out
    assert (f'consumer check (VisionTransformer): loaded {NUM_ENCODER_KEYS}'
            ' / missing 0 / unexpected 0 / shape mismatch 0') in printed
    state_dict = torch.load(converted, map_location='cpu')['state_dict']
    assert len(state_dict) == NUM_ENCODER_KEYS
    assert all(key.startswith('backbone.') for key in state_dict)


def tiny_cfg(config: str, checkpoint: str, data_root: str,
             work_dir: str) -> Config:
    """A shipped config with a tiny ViT, 2 classes and 32 px images."""
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(
        dict(
            model=dict(
                backbone=dict(
                    arch=dict(_delete_=True, **TINY_VIT),
                    img_size=PRETRAIN_SIZE,
                    patch_size=PATCH_SIZE,
                    init_cfg=dict(checkpoint=checkpoint)),
                head=dict(num_classes=2, in_channels=EMBED_DIMS)),
            data_preprocessor=dict(num_classes=2),
            train_cfg=dict(max_epochs=1),
            val_evaluator=dict(topk=(1, )),
            default_hooks=dict(logger=dict(interval=1)),
            work_dir=work_dir))
    if cfg.model.get('neck') is not None:  # linear probing
        cfg.model.neck.input_features = EMBED_DIMS
        cfg.model.backbone.frozen_stages = NUM_LAYERS
        cfg.optim_wrapper.type = 'NonFiniteSkipOptimWrapper'
    cfg.test_evaluator = cfg.val_evaluator
    for loader, split in ((cfg.train_dataloader, 'train'),
                          (cfg.val_dataloader, 'val')):
        pipeline = loader.dataset.pipeline
        for step in pipeline:
            if step.type == 'RandomResizedCrop':
                step.scale = PRETRAIN_SIZE
            if step.type == 'ResizeEdge':
                step.scale = PRETRAIN_SIZE + 4
            if step.type == 'CenterCrop':
                step.crop_size = PRETRAIN_SIZE
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.dataset = ConfigDict(
            type='CustomDataset',
            data_root=data_root,
            data_prefix=split,
            pipeline=pipeline)
    cfg.test_dataloader = cfg.val_dataloader
    return cfg


@pytest.mark.parametrize('config', [FINETUNE, LINEAR],
                         ids=['finetune', 'linear'])
def test_imagenet_transfer(config, converted, pretrained_checkpoint,
                           class_folder, tmp_path):
    cfg = tiny_cfg(config, converted, class_folder, str(tmp_path))
    assert cfg.model.backbone.init_cfg.prefix == 'backbone.'

    # what the config's Pretrained init really loads, weight by weight
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    encoder = load_encoder(pretrained_checkpoint).state_dict
    report = account_keys(model.backbone.state_dict(), encoder)
    allowed_missing, allowed_unexpected = mmpretrain_vit_allowed_keys(
        model.backbone)
    if config == FINETUNE:
        assert report.missing == ['ln2.weight', 'ln2.bias']
        assert report.unexpected == ['ln1.weight', 'ln1.bias']
        assert allowed_unexpected == (r'ln1\.(weight|bias)', )
    else:
        assert report.missing == report.unexpected == []
        assert allowed_missing == allowed_unexpected == ()
    assert report.mismatched == []
    assert len(report.loaded) == NUM_ENCODER_KEYS - len(report.unexpected)
    state = model.backbone.state_dict()
    for key in report.loaded:
        assert torch.equal(state[key], encoder[key]), key

    # one training step and one inference through the Runner
    runner = run_runner(cfg)
    assert runner.iter == 1
    assert 'val/accuracy/top1' in runner.message_hub.log_scalars
