# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# 20-NN top-1 on ImageNet-1K of a pretrained ViT-B/16:
# ./vit-base-p16_knn_in100.py on mmpretrain's ImageNet-1K layout
# (data/imagenet, its 1000 classes). The bank is the training split.
#   python tools/test.py THIS_CONFIG PRETRAIN_CHECKPOINT
_base_ = './vit-base-p16_knn_in100.py'

test_dataloader = dict(dataset=dict(datasets=[
    dict(type='ImageNet', data_root='data/imagenet/', split='train',
         pipeline=_base_.knn_resize + [
             dict(type='SetKNNBankFlag', bank=True), _base_.knn_pack]),
    dict(type='ImageNet', data_root='data/imagenet/', split='val',
         pipeline=_base_.knn_resize + [
             dict(type='SetKNNBankFlag', bank=False), _base_.knn_pack]),
]))
