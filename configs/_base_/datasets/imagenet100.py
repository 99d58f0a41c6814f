# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# ImageNet-100 (CMC's 100 classes of ImageNet-1K), as written by
#   python tools/dataset_converters/imagenet100.py data/imagenet \
#       data/imagenet100 --symlink
# data/imagenet100/{train,val}/<wnid>/ (links), meta/{train,val}.txt
# ("path label", labels 0-99 in the list's order), classes.txt.
#
# The dataset fields that differ from ImageNet-1K, under names no
# mmpretrain config uses, so that a config can inherit this file next to a
# recipe that already holds ImageNet-1K data and swap the fields in:
#   train_dataloader = dict(dataset=_base_.imagenet100_train)
#   val_dataloader = dict(dataset=_base_.imagenet100_val)
# (configs/_base_/datasets/imagenet100_bs512_mae.py,
# configs/study/imagenet/eval/). Without --symlink, set data_root to the
# ImageNet-1K folder and ann_file / classes to the converter's files.
imagenet100_data_root = 'data/imagenet100/'
imagenet100_num_classes = 100
imagenet100_train = dict(
    type='ImageNet',
    data_root=imagenet100_data_root,
    split='train',
    data_prefix='train',
    ann_file='meta/train.txt',
    classes=imagenet100_data_root + 'classes.txt')
imagenet100_val = dict(
    imagenet100_train, split='val', data_prefix='val',
    ann_file='meta/val.txt')
