# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# ImageNet-1K linear probing of an EHM-pretrained ViT-B/16, 90 epochs.
# Everything but the checkpoint is mmpretrain's MAE benchmark (60.8 top-1
# from MAE 300-epoch weights): frozen encoder with its final norm, CLS
# token, BatchNorm neck, LARS lr 6.4 (batch 8 x 2048).
_base_ = [
    'mmpretrain::mae/benchmarks/vit-base-p16_8xb2048-linear-coslr-90e_in1k.py',
    '../../_base_/ehm_benchmark.py',
]

# The checkpoint: an EHM pretraining checkpoint or the output of
# tools/model_converters/ehm2mmpretrain.py; every encoder weight is used.
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
model = dict(backbone=dict(init_cfg=dict(
    _base_.ehm_encoder_init,
    checkpoint='pretrain/ehm_vit-base-p16_mmpretrain.pth')))
optim_wrapper = dict(type='NonFiniteSkipAmpOptimWrapper')
default_hooks = dict(
    checkpoint=_base_.ehm_checkpoint_hook,
    divergence_guard=_base_.ehm_divergence_guard_hook)
