# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# MAE pretraining data on ImageNet-100: mmpretrain's ImageNet-1K MAE data
# (RandomResizedCrop 224 of 0.2-1.0, flip, 512 images per GPU) with the
# annotation file, image folder and classes of ImageNet-100
# (configs/_base_/datasets/imagenet100.py). For ImageNet-1K inherit
# 'mmpretrain::_base_/datasets/imagenet_bs512_mae.py' instead: the only
# difference (configs/study/imagenet/masking_study_vit-b_in1k.py).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs512_mae.py',
    './imagenet100.py',
]

data_root = _base_.imagenet100_data_root
train_dataloader = dict(dataset=_base_.imagenet100_train)
