# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# Fine-tuning on ImageNet-100 of a pretrained ViT-S/16 (DeiT-S encoder,
# 384 channels): ./vit-base-p16_ft_in100.py with that encoder; the recipe
# (lr, layer decay 0.65, drop path 0.1, augmentation) unchanged.
#   --cfg-options model.backbone.init_cfg.checkpoint=PRETRAIN_CHECKPOINT
_base_ = './vit-base-p16_ft_in100.py'

model = dict(
    backbone=dict(
        arch='deit-small',
        init_cfg=dict(checkpoint='pretrain/ehm_vit-small-p16.pth')),
    head=dict(in_channels=384))
