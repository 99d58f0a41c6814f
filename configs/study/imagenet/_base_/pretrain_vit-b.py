# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# EHM-MAE ViT-B/16 at 224 px (14 x 14 patches) for the ImageNet study: the
# model of mmpretrain's MAE recipe with what EHM adds
# (configs/_base_/ehm_mae.py), mmpretrain's runtime and the study's
# schedule. No data here: a study config inherits this file next to a data
# base (configs/_base_/datasets/imagenet100_bs512_mae.py for ImageNet-100,
# mmpretrain's imagenet_bs512_mae.py for ImageNet-1K), which holds the
# dataloader.
#
# Schedule (planning values; docs/en/cluster_study.md): 200 epochs, 20 of
# linear warm-up then cosine, AdamW betas (0.9, 0.95), weight decay 0.05,
# as MAE. Batch 1024 = 8 GPUs x 128 images. Learning rate by MAE's linear
# scaling rule, lr = base_lr * batch / 256 with base_lr 1.5e-4: 6e-4 at
# batch 1024. Another batch: set train_dataloader.batch_size and
# auto_scale_lr.enable=True (mmengine rescales lr from base_batch_size), or
# set optim_wrapper.optimizer.lr by the rule.
_base_ = [
    'mmpretrain::_base_/models/mae_vit-base-p16.py',
    'mmpretrain::_base_/default_runtime.py',
    '../../../_base_/ehm_mae.py',
]

study_base_lr = 1.5e-4
study_batch_size = 1024  # 8 GPUs x 128 images
max_epochs = 200
warmup_epochs = 20

# The EHM arm's masks (_ehm of ./imagenet_study.py; equal, tested): the
# teacher's attention tree cut by node size (depth_unit='node_size'),
# depth 0 -> 5, nodes of 1 -> 32 of the 196 patches.
model = dict(
    _base_.ehm_mae_model,
    masking=dict(
        type='EvolvedHierarchicalMasking',
        mask_ratio=0.75,
        d_min=0.0,
        d_max=5.0,
        schedule='linear',
        depth_unit='node_size'))
optim_wrapper = dict(
    type='NonFiniteSkipAmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(
        type='AdamW',
        lr=study_base_lr * study_batch_size / 256,
        betas=(0.9, 0.95),
        weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'ln': dict(decay_mult=0.0),
            'bias': dict(decay_mult=0.0),
            'pos_embed': dict(decay_mult=0.),
            'mask_token': dict(decay_mult=0.),
            'cls_token': dict(decay_mult=0.)
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0,
         end=warmup_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs,
         by_epoch=True, begin=warmup_epochs, end=max_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
default_hooks = dict(
    checkpoint=dict(_base_.ehm_checkpoint_hook, interval=1,
                    max_keep_ckpts=1),
    divergence_guard=_base_.ehm_divergence_guard_hook)
auto_scale_lr = dict(base_batch_size=study_batch_size, enable=False)
