# COCO instance segmentation: ViTDet-style Mask R-CNN on an EHM-pretrained
# plain ViT-B/16 (Li et al., ECCV 2022): window attention with global
# attention in blocks 2, 5, 8, 11, decomposed relative positions, a simple
# feature pyramid from the last feature map, LN in the pyramid and heads,
# large-scale jitter at 1024 px, 100 epochs (184,375 iterations at batch
# 16 x 4 = 64), AdamW lr 1e-4, weight decay 0.1, layer-wise lr decay 0.7.
# Reference: ViTDet with MAE ViT-B weights, 51.6 box AP / 45.7 mask AP.
# Not included: ViTDet's fp16 gradient compression for DDP (speed only).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::common/lsj-100e_coco-instance.py',
]

custom_imports = dict(
    imports=['ehm_mm.downstream.mmdet'], allow_failed_imports=False)

image_size = (1024, 1024)
norm_cfg = dict(type='LN2d', eps=1e-6, requires_grad=True)

# ``ViTDetBackbone`` loads official-MAE / timm weights (the output of
# tools/model_converters/ehm2timm.py, or the official MAE checkpoint for
# the baseline) or an EHM checkpoint, and fails on any unaccounted key.
# New weights: the relative position tables; unused: the CLS token and the
# final norm. Set the checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
# or as the PRETRAIN argument of tools/benchmarks/mmdet/dist_train.sh.
model = dict(
    data_preprocessor=dict(
        pad_size_divisor=32,
        batch_augments=[
            dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)
        ]),
    backbone=dict(
        _delete_=True,
        type='ViTDetBackbone',
        arch='base',
        img_size=image_size[0],
        patch_size=16,
        window_size=14,
        drop_path_rate=0.1,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='pretrain/ehm_vit-base-p16_timm.pth')),
    neck=dict(
        _delete_=True,
        type='SimpleFPN',
        backbone_channel=768,
        out_channels=256,
        num_outs=5,
        norm_cfg=norm_cfg),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

# Evaluate at the training scale (long side 1024) instead of 1333x800.
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(batch_size=4, num_workers=8)
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# AdamW with layer-wise lr decay over the ViT blocks (neck and heads at the
# full lr); no weight decay on norms and the position embedding, as in
# detectron2's ViTDet.
optim_wrapper = dict(
    _delete_=True,
    type='NonFiniteSkipAmpOptimWrapper',  # skips the step of a non-finite loss
    constructor='BackboneLayerDecayOptimWrapperConstructor',
    optimizer=dict(
        type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    paramwise_cfg=dict(
        layer_decay_rate=0.7,
        norm_decay_mult=0.0,
        custom_keys={'pos_embed': dict(decay_mult=0.0)}))

# 100 epochs = 184,375 iterations x 64 images / 118k images; the lr drops
# 10x at 88 and 96 epochs.
max_iters = 184375
interval = 5000
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=250),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_iters,
        by_epoch=False,
        milestones=[163889, 177546],
        gamma=0.1)
]
train_cfg = dict(
    _delete_=True,
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=interval)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(
        type='AtomicCheckpointHook',  # temporary file, fsync, rename
        by_epoch=False,
        interval=interval,
        save_last=True,
        max_keep_ckpts=5),
    divergence_guard=dict(type='DivergenceGuardHook'))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
