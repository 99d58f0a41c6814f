# Linear-probe stage of tiny_study.py: a linear head on the frozen
# pretrained encoder's CLS token, 2 epochs on the fake ImageNet train split,
# validated on its val split (accuracy/top1). The checkpoint reaches the
# encoder through model.backbone.init_cfg.checkpoint.
_base_ = 'mmpretrain::_base_/default_runtime.py'

data_root = '{{$EHM_FAKE_IMAGENET:data/fake_imagenet}}'

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer',
        arch=dict(
            embed_dims=48, num_layers=2, num_heads=3,
            feedforward_channels=96),
        img_size=32,
        patch_size=8,
        frozen_stages=2,
        out_type='cls_token',
        init_cfg=dict(type='Pretrained', checkpoint='', prefix='backbone.')),
    head=dict(
        type='LinearClsHead',
        num_classes=4,
        in_channels=48,
        loss=dict(type='CrossEntropyLoss'),
        topk=(1, )))
data_preprocessor = dict(
    num_classes=4,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)
_dataset = dict(type='CustomDataset', data_root=data_root)
_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.5, 1.0)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs')
]
_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=36, edge='short'),
    dict(type='CenterCrop', crop_size=32),
    dict(type='PackInputs')
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        _dataset, ann_file='meta/train.txt', data_prefix='train',
        pipeline=_train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        _dataset, ann_file='meta/val.txt', data_prefix='val',
        pipeline=_test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, ))
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9))
train_cfg = dict(by_epoch=True, max_epochs=2, val_interval=2)
val_cfg = dict()
default_hooks = dict(
    logger=dict(interval=1), checkpoint=dict(type='CheckpointHook', interval=1))
