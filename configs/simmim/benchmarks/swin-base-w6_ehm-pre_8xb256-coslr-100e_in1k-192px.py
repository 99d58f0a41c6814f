# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# ImageNet-1K fine-tuning of an EHM-pretrained SimMIM Swin-B (window 6) at
# 192 px, 100 epochs. Everything but the checkpoint is mmpretrain's SimMIM
# benchmark (AdamW lr 5e-3, layer decay 0.9, drop path 0.1).
_base_ = [
    'mmpretrain::simmim/benchmarks/swin-base-w6_8xb256-coslr-100e_in1k-192px.py',  # noqa: E501
    '../../_base_/ehm_benchmark.py',
]

# The checkpoint: an EHM-SimMIM (configs/simmim/ehm-simmim_swin-*.py) or a
# SimMIM-with-EHM-transform (configs/simmim/simmim_swin-*_ehm-pix_*.py)
# pretraining checkpoint; its student encoder ``backbone.*`` is read.
# Set it with --cfg-options model.backbone.init_cfg.checkpoint=PATH.
# Key accounting (tested): every Swin weight is loaded; the only unused
# pretrained key is ``mask_token``; the EMA teacher, decoder and head are
# outside the ``backbone.`` prefix.
model = dict(backbone=dict(init_cfg=dict(
    _base_.ehm_encoder_init,
    checkpoint='pretrain/ehm-simmim_swin-base-w6.pth')))
optim_wrapper = dict(type='NonFiniteSkipAmpOptimWrapper')
default_hooks = dict(
    checkpoint=_base_.ehm_checkpoint_hook,
    divergence_guard=_base_.ehm_divergence_guard_hook)
