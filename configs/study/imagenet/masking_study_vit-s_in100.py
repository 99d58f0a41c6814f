# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# The masking study at ImageNet scale (issue 26), ViT-S/16 at 224 px on
# ImageNet-100: the ViT-B/16 study (./masking_study_vit-b_in100.py: arms,
# contrasts, pre-registration, seeds, data, 200 epochs, batch 1024 and
# lr = 1.5e-4 * batch / 256) with DeiT-S's encoder (mmpretrain arch
# 'deit-small': 384 channels, 12 layers, 6 heads), MAE's decoder (8 blocks
# of 512 channels) and the ViT-S evaluation configs.
_base_ = './masking_study_vit-b_in100.py'

model = dict(backbone=dict(arch='deit-small'), neck=dict(embed_dim=384))

study_evaluation = [
    dict(stage, config=path) for stage, path in zip(
        _base_.evaluation_stages, [
            'configs/study/imagenet/eval/vit-small-p16_knn_in100.py',
            'configs/study/imagenet/eval/vit-small-p16_linear_in100.py',
            'configs/study/imagenet/eval/vit-small-p16_ft_in100.py',
            'configs/study/imagenet/eval/vit-small-p16_upernet_ade20k.py',
        ])
]
