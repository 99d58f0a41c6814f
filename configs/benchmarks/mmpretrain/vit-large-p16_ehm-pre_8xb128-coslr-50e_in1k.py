# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# ImageNet-1K fine-tuning of an EHM-pretrained ViT-L/16, 50 epochs.
# Everything but the checkpoint is mmpretrain's MAE benchmark: AdamW lr
# 4e-3 (batch 8 x 128), layer decay 0.75, drop path 0.2.
_base_ = [
    'mmpretrain::mae/benchmarks/vit-large-p16_8xb128-coslr-50e_in1k.py',
    '../../_base_/ehm_benchmark.py',
]

# See vit-base-p16_ehm-pre_8xb128-coslr-100e_in1k.py for the checkpoint.
model = dict(backbone=dict(init_cfg=dict(
    _base_.ehm_encoder_init,
    checkpoint='pretrain/ehm_vit-large-p16_mmpretrain.pth')))
# fused AdamW skips the step of a non-finite loss on the device (no host
# read per step; docs/en/reliability.md).
optim_wrapper = dict(
    type='NonFiniteSkipOptimWrapper', optimizer=dict(fused=True))
default_hooks = dict(
    checkpoint=_base_.ehm_checkpoint_hook,
    divergence_guard=_base_.ehm_divergence_guard_hook)
