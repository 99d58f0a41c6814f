# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# Linear probe on ImageNet-100 of a pretrained ViT-B/16: the project's
# ImageNet-1K linear benchmark (mmpretrain's MAE recipe: frozen encoder
# with its final norm, CLS token, BatchNorm neck, LARS, 90 epochs, 10 of
# warm-up, cosine) on ImageNet-100 (configs/_base_/datasets/
# imagenet100.py) with a 100-class head. Batch 1024 (8 GPUs x 128)
# instead of 8 x 2048, which would leave ImageNet-100 about 8 iterations
# an epoch; lr by the recipe's linear rule, lr = 0.1 * batch / 256 = 0.4
# (the recipe: 6.4 at 16384).
#   --cfg-options model.backbone.init_cfg.checkpoint=PRETRAIN_CHECKPOINT
_base_ = [
    '../../../benchmarks/mmpretrain/'
    'vit-base-p16_ehm-pre_8xb2048-linear-coslr-90e_in1k.py',
    '../../../_base_/datasets/imagenet100.py',
]

linear_batch_size = 1024  # 8 GPUs x 128
train_dataloader = dict(
    batch_size=linear_batch_size // 8, dataset=_base_.imagenet100_train)
val_dataloader = dict(dataset=_base_.imagenet100_val)
test_dataloader = val_dataloader
model = dict(head=dict(num_classes=_base_.imagenet100_num_classes))
optim_wrapper = dict(optimizer=dict(lr=0.1 * linear_batch_size / 256))
auto_scale_lr = dict(base_batch_size=linear_batch_size)
