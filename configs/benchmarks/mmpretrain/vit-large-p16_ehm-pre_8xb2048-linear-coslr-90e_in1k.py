# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# ImageNet-1K linear probing of an EHM-pretrained ViT-L/16, 90 epochs.
# Everything but the checkpoint is mmpretrain's MAE benchmark.
_base_ = [
    'mmpretrain::mae/benchmarks/vit-large-p16_8xb2048-linear-coslr-90e_in1k.py',  # noqa: E501
    '../../_base_/ehm_benchmark.py',
]

# See vit-base-p16_ehm-pre_8xb2048-linear-coslr-90e_in1k.py.
model = dict(backbone=dict(init_cfg=dict(
    _base_.ehm_encoder_init,
    checkpoint='pretrain/ehm_vit-large-p16_mmpretrain.pth')))
optim_wrapper = dict(type='NonFiniteSkipAmpOptimWrapper')
default_hooks = dict(
    checkpoint=_base_.ehm_checkpoint_hook,
    divergence_guard=_base_.ehm_divergence_guard_hook)
