# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# Linear probe on ImageNet-100 of a pretrained ViT-S/16 (DeiT-S encoder,
# 384 channels): ./vit-base-p16_linear_in100.py with that encoder.
#   --cfg-options model.backbone.init_cfg.checkpoint=PRETRAIN_CHECKPOINT
_base_ = './vit-base-p16_linear_in100.py'

model = dict(
    backbone=dict(
        arch='deit-small',
        init_cfg=dict(checkpoint='pretrain/ehm_vit-small-p16.pth')),
    neck=dict(input_features=384),
    head=dict(in_channels=384))
