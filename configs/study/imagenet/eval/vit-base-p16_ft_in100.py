# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# Fine-tuning on ImageNet-100 of a pretrained ViT-B/16: the project's
# ImageNet-1K fine-tuning benchmark (mmpretrain's MAE recipe: AdamW lr
# 2e-3 at batch 1024 = 8 GPUs x 128, i.e. lr = 5e-4 * batch / 256, layer
# decay 0.65, RandAugment, Mixup / CutMix, drop path 0.1, 100 epochs, 5 of
# warm-up, cosine) on ImageNet-100 (configs/_base_/datasets/
# imagenet100.py) with a 100-class head.
#   --cfg-options model.backbone.init_cfg.checkpoint=PRETRAIN_CHECKPOINT
_base_ = [
    '../../../benchmarks/mmpretrain/'
    'vit-base-p16_ehm-pre_8xb128-coslr-100e_in1k.py',
    '../../../_base_/datasets/imagenet100.py',
]

train_dataloader = dict(dataset=_base_.imagenet100_train)
val_dataloader = dict(dataset=_base_.imagenet100_val)
test_dataloader = val_dataloader
model = dict(head=dict(num_classes=_base_.imagenet100_num_classes))
