# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Smoke tests that fail when the OpenMMLab stack is installed wrongly.

A missing ``mmcv._ext`` (mmcv built without ops), a torch/mmcv ABI mismatch
or an incompatible mmseg/mmdet release shows up here first.
"""
import pytest
import torch


def test_mmcv_nms_matches_torchvision():
    import torchvision
    from mmcv.ops import nms

    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=generator) * 100
    wh = torch.rand(200, 2, generator=generator) * 40 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(200, generator=generator)

    _, keep_mmcv = nms(boxes, scores, iou_threshold=0.5)
    keep_tv = torchvision.ops.nms(boxes, scores, iou_threshold=0.5)
    assert keep_mmcv.tolist() == keep_tv.tolist()
    assert 0 < len(keep_tv) < 200


def test_mmpretrain_mae_config_builds_and_runs():
    from mmengine.hub import get_config
    from mmpretrain.registry import MODELS
    from mmpretrain.utils import register_all_modules

    register_all_modules()
    cfg = get_config(
        'mmpretrain::mae/mae_vit-base-p16_8xb512-amp-coslr-300e_in1k.py')
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    model = MODELS.build(cfg.model)
    inputs = torch.randn(1, 3, 224, 224)
    losses = model.loss(inputs, data_samples=None)
    assert torch.isfinite(losses['loss'])
    assert sum(p.numel() for p in model.backbone.parameters()) > 85e6


def test_mmseg_upernet_vit_train_step():
    from mmengine.config import ConfigDict
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    init_default_scope('mmseg')
    norm_cfg = dict(type='BN', requires_grad=True)
    model = MODELS.build(
        dict(
            type='EncoderDecoder',
            data_preprocessor=dict(
                type='SegDataPreProcessor',
                mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375],
                bgr_to_rgb=True,
                pad_val=0,
                seg_pad_val=255,
                size=(64, 64)),
            backbone=dict(
                type='VisionTransformer',
                img_size=(64, 64),
                patch_size=16,
                embed_dims=64,
                num_layers=4,
                num_heads=4,
                out_indices=(0, 1, 2, 3)),
            neck=dict(
                type='MultiLevelNeck',
                in_channels=[64] * 4,
                out_channels=64,
                scales=[4, 2, 1, 0.5]),
            decode_head=dict(
                type='UPerHead',
                in_channels=[64] * 4,
                in_index=[0, 1, 2, 3],
                pool_scales=(1, 2, 3, 6),
                channels=32,
                num_classes=5,
                norm_cfg=norm_cfg,
                loss_decode=dict(type='CrossEntropyLoss')),
            train_cfg=dict(),
            test_cfg=ConfigDict(mode='whole')))
    samples = []
    for _ in range(2):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, 5, (1, 64, 64)))
        sample.set_metainfo(
            dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        samples.append(sample)
    data = dict(
        inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)] * 2,
        data_samples=samples)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    from mmengine.optim import OptimWrapper
    log_vars = model.train_step(data, OptimWrapper(optimizer))
    assert torch.isfinite(log_vars['loss'])
    model.eval()
    with torch.no_grad():
        preds = model.test_step(data)
    assert preds[0].pred_sem_seg.data.shape == (1, 64, 64)


def test_mmdet_mask_rcnn_train_step():
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.hub import get_config
    from mmengine.optim import OptimWrapper
    from mmengine.registry import init_default_scope
    from mmengine.structures import InstanceData

    init_default_scope('mmdet')
    cfg = get_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    cfg.model.backbone.depth = 18
    cfg.model.backbone.init_cfg = None
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    model = MODELS.build(cfg.model)

    h = w = 128
    samples = []
    for _ in range(2):
        sample = DetDataSample()
        masks = torch.zeros(2, h, w, dtype=torch.uint8)
        masks[0, 10:60, 20:80] = 1
        masks[1, 70:120, 50:100] = 1
        instances = InstanceData()
        instances.bboxes = torch.tensor([[20., 10., 80., 60.],
                                         [50., 70., 100., 120.]])
        instances.labels = torch.tensor([1, 3])
        instances.masks = BitmapMasks(masks.numpy(), h, w)
        sample.gt_instances = instances
        sample.set_metainfo(
            dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                 scale_factor=(1., 1.), batch_input_shape=(h, w)))
        samples.append(sample)
    data = dict(
        inputs=[torch.randint(0, 255, (3, h, w), dtype=torch.uint8)] * 2,
        data_samples=samples)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    log_vars = model.train_step(data, OptimWrapper(optimizer))
    for key in ('loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'):
        assert torch.isfinite(log_vars[key]), key
    model.eval()
    with torch.no_grad():
        preds = model.test_step(data)
    assert 'masks' in preds[0].pred_instances


@pytest.mark.parametrize('name', ['mmcv', 'mmengine', 'mmpretrain', 'mmseg',
                                  'mmdet'])
def test_pinned_versions(name):
    import importlib
    expected = dict(
        mmcv='2.1.0',
        mmengine='0.10.7',
        mmpretrain='1.2.0',
        mmseg='1.2.2',
        mmdet='3.3.0')
    module = importlib.import_module(name)
    assert module.__version__ == expected[name]
