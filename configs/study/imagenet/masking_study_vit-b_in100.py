# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# The masking study at ImageNet scale (issue 26), ViT-B/16 at 224 px on
# ImageNet-100: study v2's arms, contrasts and statistics
# (./_base_/imagenet_study.py) pretrained on CMC's 100 classes, each run
# evaluated by 20-NN, linear probe and fine-tuning on ImageNet-100 and,
# where mmseg is installed, an ADE20K UPerNet. docs/en/cluster_study.md:
# the schema of the study_* keys, the commands and the GPU-hours
# (tools/analysis/study_cost.py).
#
# Pretraining (./_base_/pretrain_vit-b.py): 200 epochs, batch 1024 (8 GPUs
# x 128), AdamW lr = 1.5e-4 * batch / 256 = 6e-4, 20 warm-up epochs, then
# cosine. Evaluation (configs/study/imagenet/eval/): 20-NN on the frozen
# CLS feature (bank: the training images); linear probe 90 epochs, batch
# 1024, LARS lr = 0.1 * batch / 256 = 0.4; fine-tuning 100 epochs, batch
# 1024, AdamW lr = 5e-4 * batch / 256 = 2e-3 (mmpretrain's MAE recipes).
# ImageNet-1K: the same with mmpretrain's data base
# (./masking_study_vit-b_in1k.py).
_base_ = [
    './_base_/pretrain_vit-b.py',
    '../../_base_/datasets/imagenet100_bs512_mae.py',
    './_base_/imagenet_study.py',
]

train_dataloader = dict(
    batch_size=_base_.study_batch_size // 8,  # per GPU, 8 GPUs
    sampler=_base_.ehm_train_sampler)

# The evaluation chain (./_base_/imagenet_study.py) with the ViT-B /
# ImageNet-100 configs.
study_evaluation = [
    dict(stage, config=path) for stage, path in zip(
        _base_.evaluation_stages, [
            'configs/study/imagenet/eval/vit-base-p16_knn_in100.py',
            'configs/study/imagenet/eval/vit-base-p16_linear_in100.py',
            'configs/study/imagenet/eval/vit-base-p16_ft_in100.py',
            'configs/benchmarks/mmseg/'
            'ehm-base_upernet_8xb2-amp-160k_ade20k-512x512.py',
        ])
]
