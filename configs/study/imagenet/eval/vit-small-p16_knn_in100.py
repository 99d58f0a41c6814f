# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# 20-NN top-1 on ImageNet-100 of a pretrained ViT-S/16 (DeiT-S encoder):
# ./vit-base-p16_knn_in100.py with mmpretrain's arch 'deit-small'.
#   python tools/test.py THIS_CONFIG PRETRAIN_CHECKPOINT
_base_ = './vit-base-p16_knn_in100.py'

model = dict(backbone=dict(arch='deit-small'))
