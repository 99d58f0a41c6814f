# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# ADE20K UPerNet on a pretrained ViT-S/16 (DeiT-S encoder: 384 channels,
# 6 heads): the project's ViT-B/16 UPerNet benchmark
# (configs/benchmarks/mmseg/ehm-base_upernet_8xb2-amp-160k_ade20k-512x512.py:
# mmseg's MAE recipe, 160k iterations at 8 x 2, AdamW lr 1e-4, layer decay
# 0.65) with the ViT-S widths in the backbone, neck and heads (as mmseg's
# DeiT-S UPerNet). Needs mmseg.
#   --cfg-options model.backbone.init_cfg.checkpoint=PRETRAIN_CHECKPOINT
_base_ = ('../../../benchmarks/mmseg/'
          'ehm-base_upernet_8xb2-amp-160k_ade20k-512x512.py')

model = dict(
    backbone=dict(
        embed_dims=384,
        num_heads=6,
        init_cfg=dict(checkpoint='pretrain/ehm_vit-small-p16_mmseg.pth')),
    neck=dict(embed_dim=384),
    decode_head=dict(in_channels=[384, 384, 384, 384]),
    auxiliary_head=dict(in_channels=384))
