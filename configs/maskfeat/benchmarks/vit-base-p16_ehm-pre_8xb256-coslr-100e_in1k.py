# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# ImageNet-1K fine-tuning of an EHM-pretrained ViT-B/16 from MaskFeat (HOG
# targets, configs/maskfeat/*_ehm-pix_*.py) or EHM-SimMIM ViT
# (configs/simmim/ehm-simmim_vit-*.py), 100 epochs. Everything but the
# checkpoint is mmpretrain's MaskFeat benchmark (AdamW lr 8e-3, layer decay
# 0.65, average-pooled head).
_base_ = [
    'mmpretrain::maskfeat/benchmarks/vit-base-p16_8xb256-coslr-100e_in1k.py',
    '../../_base_/ehm_benchmark.py',
]

# The student encoder ``backbone.*`` of the checkpoint is read; set it with
# --cfg-options model.backbone.init_cfg.checkpoint=PATH.
# Key accounting (tested): every ViT weight but the new ``ln2`` (norm of
# the pooled tokens) is loaded; the unused pretrained keys are
# ``mask_token`` and the final norm ``ln1`` (final_norm=False).
model = dict(backbone=dict(init_cfg=dict(
    _base_.ehm_encoder_init,
    checkpoint='pretrain/ehm-maskfeat_vit-base-p16.pth')))
# fused AdamW skips the step of a non-finite loss on the device (no host
# read per step; docs/en/reliability.md).
optim_wrapper = dict(
    type='NonFiniteSkipOptimWrapper', optimizer=dict(fused=True))
default_hooks = dict(
    checkpoint=_base_.ehm_checkpoint_hook,
    divergence_guard=_base_.ehm_divergence_guard_hook)
