# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# 20-NN top-1 on ImageNet-100 of a pretrained ViT-B/16, evaluation only:
#   python tools/test.py THIS_CONFIG PRETRAIN_CHECKPOINT
# tools/test.py loads the checkpoint's student encoder (backbone.*) into
# the frozen encoder with every key accounted for. Features: the CLS token
# after the final norm, L2-normalised (RetrievalFeatureExtractor). Bank:
# the ImageNet-100 training images, queries: its validation images, both
# resized to 256 (short side) and centre-cropped to 224; weighted vote of
# the 20 nearest bank images, temperature 0.07 (KNNBankAccuracy), reported
# as knnbank/top1.
_base_ = [
    '../../../benchmarks/retrieval/_base_/models/vit-base-p16_retrieval.py',
    '../../../benchmarks/retrieval/_base_/retrieval_runtime.py',
    '../../../_base_/datasets/imagenet100.py',
]

custom_imports = dict(
    imports=['ehm_mm', 'ehm_mm.retrieval'], allow_failed_imports=False)
model = dict(pooling='cls')

knn_resize = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
]
knn_pack = dict(
    type='PackInputs', meta_keys=['sample_idx', 'img_path', 'knn_bank'])

test_dataloader = dict(
    batch_size=256,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='ConcatDataset',
        datasets=[
            dict(_base_.imagenet100_train, pipeline=knn_resize + [
                dict(type='SetKNNBankFlag', bank=True), knn_pack]),
            dict(_base_.imagenet100_val, pipeline=knn_resize + [
                dict(type='SetKNNBankFlag', bank=False), knn_pack]),
        ]))
test_evaluator = dict(
    type='KNNBankAccuracy', k=20, temperature=0.07,
    feature_key='retrieval_feature')
