# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# ImageNet-1K fine-tuning of an EHM-pretrained ViT-B/16, 100 epochs.
# Everything but the checkpoint is mmpretrain's MAE benchmark (83.1 top-1
# from MAE 300-epoch weights): AdamW lr 2e-3 (batch 8 x 128), layer decay
# 0.65, RandAugment, Mixup / CutMix, drop path 0.1, average-pooled head.
_base_ = [
    'mmpretrain::mae/benchmarks/vit-base-p16_8xb128-coslr-100e_in1k.py',
    '../../_base_/ehm_benchmark.py',
]

# The checkpoint: an EHM pretraining checkpoint (its student encoder,
# ``backbone.*``, is read; decoder, mask token and EMA teacher are ignored)
# or the output of tools/model_converters/ehm2mmpretrain.py. Set it with
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
# or as the PRETRAIN argument of tools/benchmarks/mmpretrain/dist_train.sh.
# Expected key differences (logged by mmengine): the pretrained final norm
# ``ln1`` is unused and ``ln2`` (norm of the pooled tokens) is new.
model = dict(backbone=dict(init_cfg=dict(
    _base_.ehm_encoder_init,
    checkpoint='pretrain/ehm_vit-base-p16_mmpretrain.pth')))
# fused AdamW skips the step of a non-finite loss on the device (no host
# read per step; docs/en/reliability.md).
optim_wrapper = dict(
    type='NonFiniteSkipOptimWrapper', optimizer=dict(fused=True))
default_hooks = dict(
    checkpoint=_base_.ehm_checkpoint_hook,
    divergence_guard=_base_.ehm_divergence_guard_hook)
