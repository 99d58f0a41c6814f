# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""EHM checkpoint -> ehm2timm -> ViTDet Mask R-CNN (shipped config, shrunk).

Plus the ViTDet pieces mmdet's pip package lacks: ``ViTDetBackbone``,
``SimpleFPN`` and the layer-decay optimizer constructor.
"""
import json
import os
import os.path as osp
import runpy

import pytest
import torch
from mmdet.datasets import CocoDataset
from mmdet.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.models.utils import resize_pos_embed
from torch import nn
from transfer_utils import (
    EMBED_DIMS,
    FFN_CHANNELS,
    NUM_HEADS,
    NUM_LAYERS,
    PATCH_SIZE,
    PRETRAIN_SIZE,
    REPO_ROOT,
    run_runner,
    write_images,
)

from ehm_mm.downstream import load_encoder
from ehm_mm.downstream.mmdet import (
    SimpleFPN,
    ViTDetBackbone,
    ViTDetEncoderLayer,
)

CONFIG = osp.join(REPO_ROOT, 'configs', 'benchmarks', 'mmdet',
                  'vitdet_mask-rcnn_vit-b-ehm_16xb4-lsj-100e_coco.py')
CONVERTER = osp.join(REPO_ROOT, 'tools', 'model_converters', 'ehm2timm.py')
IMAGE_SIZE = 128
TINY_ARCH = dict(
    embed_dims=EMBED_DIMS,
    num_layers=NUM_LAYERS,
    num_heads=NUM_HEADS,
    feedforward_channels=FFN_CHANNELS,
    global_attn_indexes=[1, 3])


def tiny_backbone(checkpoint=None, **kwargs) -> dict:
    cfg = dict(
        type='ViTDetBackbone',
        arch=TINY_ARCH,
        img_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        window_size=8)
    cfg.update(kwargs)
    if checkpoint is not None:
        cfg['init_cfg'] = dict(type='Pretrained', checkpoint=checkpoint)
    return cfg


def build(cfg: dict) -> nn.Module:
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg)


def test_vitdet_backbone_loads_every_encoder_weight(pretrained_checkpoint):
    backbone = build(tiny_backbone(pretrained_checkpoint))
    backbone.init_weights()
    report = backbone.pretrained_report
    assert report.unexpected == ['cls_token', 'ln1.weight', 'ln1.bias']
    assert sorted(report.missing) == sorted(
        f'layers.{i}.attn.rel_pos_{axis}' for i in range(NUM_LAYERS)
        for axis in 'hw')
    encoder = load_encoder(pretrained_checkpoint).state_dict
    state = backbone.state_dict()
    for key in report.loaded:
        if key != 'pos_embed':
            assert torch.equal(state[key], encoder[key]), key
    # CLS slot dropped, 4x4 pretraining grid resized to the 16x16 grid
    grid = PRETRAIN_SIZE // PATCH_SIZE
    expected = resize_pos_embed(encoder['pos_embed'][:, 1:], (grid, grid),
                                (16, 16), 'bicubic', 0)
    torch.testing.assert_close(state['pos_embed'].flatten(1, 2), expected)

    backbone.eval()
    with torch.no_grad():
        (feature, ) = backbone(torch.randn(1, 3, IMAGE_SIZE, 96))
    assert feature.shape == (1, EMBED_DIMS, 16, 12)


def test_vitdet_backbone_loads_the_ema_teacher(pretrained_checkpoint):
    backbone = build(
        tiny_backbone(pretrained_checkpoint, checkpoint_source='teacher'))
    backbone.init_weights()
    teacher = load_encoder(pretrained_checkpoint, 'teacher').state_dict
    student = load_encoder(pretrained_checkpoint).state_dict
    weight = backbone.layers[0].attn.qkv.weight
    assert torch.equal(weight, teacher['layers.0.attn.qkv.weight'])
    assert not torch.equal(weight, student['layers.0.attn.qkv.weight'])


def test_vitdet_backbone_options(pretrained_checkpoint):
    backbone = build(tiny_backbone(drop_path_rate=0.3, frozen_stages=2))
    assert all(isinstance(layer, ViTDetEncoderLayer)
               for layer in backbone.layers)
    assert [layer.window_size for layer in backbone.layers] == [8, 0, 8, 0]
    last = backbone.layers[-1]
    assert last.drop_path.drop_prob == pytest.approx(0.3)
    assert isinstance(backbone.layers[0].drop_path, nn.Identity)
    assert not any(p.requires_grad for p in backbone.layers[1].parameters())
    assert all(p.requires_grad for p in backbone.layers[2].parameters())
    assert backbone.get_layer_depth('layers.2.attn.qkv.weight') == (3, 6)

    wide = build(tiny_backbone(pretrained_checkpoint, arch=dict(
        TINY_ARCH, embed_dims=48, num_heads=4)))
    with pytest.raises(ValueError, match='shape mismatch'):
        wide.init_weights()
    with pytest.raises(ValueError, match='layer_cfgs has 2 entries'):
        build(tiny_backbone(layer_cfgs=[{}, {}]))


def test_simple_fpn():
    fpn = build(
        dict(
            type='SimpleFPN',
            backbone_channel=32,
            out_channels=16,
            num_outs=5,
            norm_cfg=dict(type='LN2d', eps=1e-6)))
    assert isinstance(fpn, SimpleFPN)
    outs = fpn((torch.randn(2, 32, 8, 12), ))
    assert [tuple(out.shape) for out in outs] == [(2, 16, 32, 48),
                                                  (2, 16, 16, 24),
                                                  (2, 16, 8, 12),
                                                  (2, 16, 4, 6),
                                                  (2, 16, 2, 3)]
    with pytest.raises(ValueError, match='scale_factors'):
        SimpleFPN(32, 16, scale_factors=(8.0, ))
    with pytest.raises(ValueError, match='num_outs'):
        SimpleFPN(32, 16, num_outs=3)
    with pytest.raises(ValueError, match='input channels'):
        fpn((torch.randn(1, 24, 8, 8), ))


_LAYER_DECAY = dict(
    type='BackboneLayerDecayOptimWrapperConstructor',
    optim_wrapper_cfg=dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.1)),
    paramwise_cfg=dict(
        layer_decay_rate=0.5,
        norm_decay_mult=0.0,
        custom_keys={'pos_embed': dict(decay_mult=0.0)}))


class Detector(nn.Module):

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ViTDetBackbone(arch=TINY_ARCH, img_size=32,
                                       patch_size=8, window_size=2)
        self.neck = nn.Linear(4, 4)


def test_layer_decay_constructor():
    with DefaultScope.overwrite_default_scope('mmdet'):
        constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(_LAYER_DECAY)
    optimizer = constructor(Detector()).optimizer
    groups = {g['param_name']: g for g in optimizer.param_groups}
    depth = NUM_LAYERS + 2
    assert groups['backbone.patch_embed.projection.weight']['lr'] == (
        0.5**(depth - 1))
    assert groups['backbone.layers.0.attn.qkv.weight']['lr'] == 0.5**(
        depth - 2)
    assert groups['backbone.layers.3.ffn.layers.1.weight']['lr'] == 0.5
    assert groups['neck.weight']['lr'] == 1.0
    assert groups['backbone.pos_embed']['weight_decay'] == 0.0
    assert groups['backbone.layers.0.ln1.weight']['weight_decay'] == 0.0
    assert groups['backbone.layers.0.attn.qkv.weight'][
        'weight_decay'] == pytest.approx(0.1)

    with pytest.raises(TypeError, match='get_layer_depth'):
        constructor(nn.Sequential(nn.Linear(2, 2)))


def write_coco(root: str, num: int = 2) -> str:
    """COCO instances (boxes + polygons, all 80 categories declared)."""
    image_dir = osp.join(root, 'images')
    os.makedirs(image_dir)
    write_images(image_dir, num, size=(IMAGE_SIZE, 96))
    images, annotations = [], []
    for i in range(num):
        images.append(
            dict(id=i + 1, file_name=f'img_{i}.jpg', height=IMAGE_SIZE,
                 width=96))
        for j, (x, y, w, h) in enumerate([(8, 10, 40, 50), (50, 60, 30,
                                                           40)]):
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=i + 1,
                    category_id=1 if j == 0 else 3,
                    bbox=[x, y, w, h],
                    area=w * h,
                    iscrowd=0,
                    segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]]))
    path = osp.join(root, 'instances.json')
    with open(path, 'w') as file:
        json.dump(
            dict(
                images=images,
                annotations=annotations,
                categories=[
                    dict(id=i + 1, name=name)
                    for i, name in enumerate(CocoDataset.METAINFO['classes'])
                ]), file)
    return path


def tiny_cfg(checkpoint: str, ann_file: str, data_root: str,
             work_dir: str) -> Config:
    """The shipped ViTDet config with a tiny ViT and 128 px images."""
    cfg = Config.fromfile(CONFIG)
    dims = EMBED_DIMS
    cfg.merge_from_dict(
        dict(
            model=dict(
                backbone=dict(_delete_=True, **tiny_backbone(checkpoint)),
                neck=dict(backbone_channel=dims, out_channels=dims),
                rpn_head=dict(in_channels=dims, feat_channels=dims),
                roi_head=dict(
                    bbox_roi_extractor=dict(out_channels=dims),
                    bbox_head=dict(
                        in_channels=dims,
                        conv_out_channels=dims,
                        fc_out_channels=64),
                    mask_roi_extractor=dict(out_channels=dims),
                    mask_head=dict(in_channels=dims, conv_out_channels=dims)),
                # fewer RoIs for CPU; keep low-score boxes of the untrained
                # heads so that the COCO evaluation has something to score
                train_cfg=dict(
                    rpn_proposal=dict(nms_pre=200, max_per_img=100),
                    rcnn=dict(sampler=dict(num=64))),
                test_cfg=dict(
                    rpn=dict(nms_pre=200, max_per_img=100),
                    rcnn=dict(score_thr=0.0, max_per_img=20))),
            optim_wrapper=dict(type='NonFiniteSkipOptimWrapper'),
            train_cfg=dict(max_iters=1, val_interval=1),
            default_hooks=dict(logger=dict(interval=1)),
            work_dir=work_dir))
    cfg.model.data_preprocessor.batch_augments[0].size = (IMAGE_SIZE,
                                                          IMAGE_SIZE)
    train_set = cfg.train_dataloader.dataset.dataset  # inside RepeatDataset
    for loader, dataset in ((cfg.train_dataloader, train_set),
                            (cfg.val_dataloader, cfg.val_dataloader.dataset)):
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        dataset.update(
            data_root=data_root,
            ann_file=ann_file,
            data_prefix=dict(img='images/'))
        for step in dataset.pipeline:
            if step.type in ('RandomResize', 'Resize'):
                step.scale = (IMAGE_SIZE, IMAGE_SIZE)
            if step.type == 'RandomResize':
                step.ratio_range = (0.8, 1.2)
            if step.type == 'RandomCrop':
                step.crop_size = (IMAGE_SIZE, IMAGE_SIZE)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator.ann_file = ann_file
    cfg.test_evaluator = cfg.val_evaluator
    return cfg


def test_coco_transfer(pretrained_checkpoint, tmp_path, capsys):
    converted = str(tmp_path / 'ehm_timm.pth')
    runpy.run_path(CONVERTER, run_name='converter')['main'](
        [pretrained_checkpoint, converted])
    printed = capsys.readouterr().out
    num_encoder = 4 + 12 * NUM_LAYERS + 2
    assert f'written: {num_encoder} tensors in timm layout' in printed
    assert (f'consumer check (ViTDetBackbone): loaded {num_encoder - 3} / '
            f'missing {2 * NUM_LAYERS} / unexpected 3') in printed
    weights = torch.load(converted, map_location='cpu')['model']
    assert 'blocks.0.mlp.fc1.weight' in weights and 'norm.bias' in weights
    assert not any(key.startswith('layers.') for key in weights)

    data_root = str(tmp_path / 'coco')
    ann_file = write_coco(data_root)
    cfg = tiny_cfg(converted, ann_file, data_root, str(tmp_path / 'work'))
    assert cfg.model.backbone.type == 'ViTDetBackbone'
    assert cfg.model.neck.type == 'SimpleFPN'
    runner = run_runner(cfg)

    report = runner.model.backbone.pretrained_report
    assert len(report.loaded) == num_encoder - 3
    assert report.unexpected == ['cls_token', 'ln1.weight', 'ln1.bias']
    assert len(report.missing) == 2 * NUM_LAYERS
    assert runner.iter == 1
    scalars = runner.message_hub.log_scalars
    assert 'val/coco/bbox_mAP' in scalars and 'val/coco/segm_mAP' in scalars
