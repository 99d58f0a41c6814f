# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""A tiny ImageNet-1K-style folder of generated JPEGs, for the tests of the
ImageNet-100 converter and the ImageNet study configs."""
import os
import os.path as osp
from typing import Dict, Sequence

import numpy as np
from PIL import Image

#: Class folders of the fake ImageNet-1K: three of CMC's ImageNet-100
#: classes and one that is not in it.
WNIDS = ('n02869837', 'n01749939', 'n02488291', 'n01440764')


def _jpeg(path: str, rng: np.random.Generator, size: int = 40) -> None:
    array = rng.integers(0, 255, size=(size, size + 8, 3), dtype=np.uint8)
    Image.fromarray(array).save(path, format='JPEG')


def make_fake_imagenet(root: str,
                       wnids: Sequence[str] = WNIDS,
                       train_per_class: int = 3,
                       val_per_class: int = 2,
                       val_layout: str = 'folders',
                       val_labels: str = 'index') -> Dict[str, int]:
    """Write ``root/train/<wnid>/*.JPEG`` and the validation images.

    Args:
        root (str): The folder to create.
        wnids (Sequence[str]): The class folders. Defaults to
            :data:`WNIDS`.
        train_per_class (int): Training images per class. Defaults to 3.
        val_per_class (int): Validation images per class. Defaults to 2.
        val_layout (str): ``'folders'`` (``val/<wnid>/``) or ``'flat'``
            (``val/ILSVRC2012_val_*.JPEG`` and ``meta/val.txt``).
            Defaults to ``'folders'``.
        val_labels (str): In the flat layout, ``'index'`` (the class's
            index among the sorted train folders, mmpretrain's val.txt) or
            ``'wnid'``. Defaults to ``'index'``.

    Returns:
        dict[str, int]: Validation file name -> index of its class in
        ``wnids`` (flat layout; empty for folders).
    """
    rng = np.random.default_rng(0)
    for wnid in wnids:
        os.makedirs(osp.join(root, 'train', wnid))
        for i in range(train_per_class):
            _jpeg(osp.join(root, 'train', wnid, f'{wnid}_{i}.JPEG'), rng)
    os.makedirs(osp.join(root, 'val'))
    truth = {}
    if val_layout == 'folders':
        for wnid in wnids:
            os.makedirs(osp.join(root, 'val', wnid))
            for i in range(val_per_class):
                _jpeg(osp.join(root, 'val', wnid, f'val_{wnid}_{i}.JPEG'),
                      rng)
        return truth
    ordered = sorted(wnids)
    lines = []
    number = 0
    for index, wnid in enumerate(wnids):
        for _ in range(val_per_class):
            number += 1
            name = f'ILSVRC2012_val_{number:08d}.JPEG'
            _jpeg(osp.join(root, 'val', name), rng)
            truth[name] = index
            label = ordered.index(wnid) if val_labels == 'index' else wnid
            lines.append(f'{name} {label}\n')
    os.makedirs(osp.join(root, 'meta'))
    with open(osp.join(root, 'meta', 'val.txt'), 'w') as f:
        f.writelines(lines)
    return truth


def write_class_list(path: str, wnids: Sequence[str]) -> str:
    """A class list file of ``wnids`` (with a comment line), for
    ``--classes``."""
    with open(path, 'w') as f:
        f.write('# test classes\n')
        f.writelines(f'{w}\n' for w in wnids)
    return path
