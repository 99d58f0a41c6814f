# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# The ViT-B/16 masking study on ImageNet-1K: ./masking_study_vit-b_in100.py
# with the data base swapped (mmpretrain's ImageNet-1K MAE data instead of
# configs/_base_/datasets/imagenet100_bs512_mae.py) and ImageNet-1K's
# evaluation configs: 20-NN (./eval/vit-base-p16_knn_in1k.py), and the
# project's mmpretrain benchmarks (linear probe 90 epochs at 8 x 2048,
# fine-tuning 100 epochs at 8 x 128). Same arms, statistics, schedule and
# lr rule; the pre-registration's planning values were made for
# ImageNet-100 and need their own pilot here.
_base_ = [
    './_base_/pretrain_vit-b.py',
    'mmpretrain::_base_/datasets/imagenet_bs512_mae.py',
    './_base_/imagenet_study.py',
]

train_dataloader = dict(
    batch_size=_base_.study_batch_size // 8,  # per GPU, 8 GPUs
    sampler=_base_.ehm_train_sampler)

study_evaluation = [
    dict(stage, config=path) for stage, path in zip(
        _base_.evaluation_stages, [
            'configs/study/imagenet/eval/vit-base-p16_knn_in1k.py',
            'configs/benchmarks/mmpretrain/'
            'vit-base-p16_ehm-pre_8xb2048-linear-coslr-90e_in1k.py',
            'configs/benchmarks/mmpretrain/'
            'vit-base-p16_ehm-pre_8xb128-coslr-100e_in1k.py',
            'configs/benchmarks/mmseg/'
            'ehm-base_upernet_8xb2-amp-160k_ade20k-512x512.py',
        ])
]
# ImageNet-1K: 1,281,167 training and 50,000 validation images.
study_images = dict(train=1_281_167, val=50_000)
