# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""A dataset of textured shapes that needs no download."""
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import List, Sequence

import numpy as np
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS
from PIL import Image

from .shape_drawing import (
    DEFAULT_OBJECT_RADIUS,
    SHAPE_CLASSES,
    check_object_radius,
    render_sample,
)

#: Bump when the drawing code changes, so stale caches are never reused.
GENERATOR_VERSION = 2
_SPLIT_IDS = {'train': 0, 'val': 1, 'test': 2}


@DATASETS.register_module()
class SyntheticShapes(BaseDataset):
    """Textured shapes on textured or cluttered backgrounds.

    Each image holds one object of one of six shape classes (circle, square,
    triangle, cross, ring, star) at a random position, size and rotation,
    filled with a texture (dots, checker, stripes, grid, waves, solid) in
    random colours, on a random background (smooth noise, speckle, or
    noise covered with small distractor shapes of every class). With
    ``class_appearance`` (default) each class has its own texture family and
    hue range, as real categories have typical surfaces, so that the class
    can be told from appearance as well as from the outline; exact colours,
    angles and frequencies stay random. Every sample comes with a per-pixel
    object mask, so the dataset serves both k-NN evaluation (labels) and
    the hierarchy-quality metric (masks).

    Generation is deterministic: sample ``i`` of a split is a pure function
    of ``(seed, split, i)``. Images and masks are written once as PNG files
    to ``data_root/<split>-n<num_samples>-s<img_size>-seed<seed>-v<V>/``
    (``-ra`` is added with random appearance, ``-r<low>-<high>`` with a
    radius range other than the default, ``-ea`` with equal areas;
    ``images/`` and ``masks/``)
    plus a ``meta.json``; later runs reuse that
    folder. The folder is written to a temporary name and renamed, so
    concurrent processes (distributed training) never see half a cache.

    Each data info holds ``img_path``, ``gt_label`` and ``mask_path``; use
    ``LoadImageFromFile`` and
    :class:`~ehm_mm.datasets.transforms.LoadObjectMask` in the pipeline.

    Args:
        data_root (str): Cache folder; created when missing.
        num_samples (int): Number of images in this split. Defaults to 600.
        img_size (int): Image side length in pixels. Defaults to 64.
        split (str): ``'train'``, ``'val'`` or ``'test'``; splits draw
            disjoint random streams. Defaults to ``'train'``.
        seed (int): Base seed of the generator. Defaults to 0.
        class_appearance (bool): Give each class its own texture family and
            hue range; False draws both at random. Defaults to True.
        object_radius (Sequence[float]): Range ``(low, high)`` of the
            object radius relative to the image side. Defaults to
            ``(0.22, 0.36)`` (objects of ~11.6 of 64 patches).
        equal_area (bool): Scale each shape so that all classes have the
            same expected area (see
            :func:`~ehm_mm.datasets.shape_drawing.render_sample`).
            Defaults to False.
        knn_bank (bool): Mark every sample as part of a k-NN memory bank
            (``knn_bank`` in the data info, for
            :class:`~ehm_mm.evaluation.KNNBankAccuracy`); False marks them
            as queries. Defaults to False.
        pipeline (Sequence): Processing pipeline. Defaults to ``()``.
        test_mode (bool): Whether the dataset is used for evaluation.
            Defaults to False.
        **kwargs: Other arguments of :class:`mmpretrain.datasets.BaseDataset`
            (``indices``, ``lazy_init``, ...), except ``ann_file``,
            ``data_prefix`` and ``classes``, which are fixed here.
    """

    METAINFO = {'classes': SHAPE_CLASSES}

    def __init__(self,
                 data_root: str,
                 num_samples: int = 600,
                 img_size: int = 64,
                 split: str = 'train',
                 seed: int = 0,
                 class_appearance: bool = True,
                 object_radius: Sequence[float] = DEFAULT_OBJECT_RADIUS,
                 equal_area: bool = False,
                 knn_bank: bool = False,
                 pipeline: Sequence = (),
                 test_mode: bool = False,
                 **kwargs) -> None:
        for fixed in ('ann_file', 'data_prefix', 'classes'):
            if fixed in kwargs:
                raise TypeError(
                    f'SyntheticShapes does not accept `{fixed}`: the file '
                    'layout and the classes are fixed by the generator')
        if not isinstance(data_root, str) or not data_root:
            raise ValueError(
                f'data_root must be a non-empty path, got {data_root!r}')
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(
                f'num_samples must be a positive int, got {num_samples!r}')
        if not isinstance(img_size, int) or img_size < 8:
            raise ValueError(f'img_size must be an int >= 8, got {img_size!r}')
        if split not in _SPLIT_IDS:
            raise ValueError(f'split must be one of {tuple(_SPLIT_IDS)}, '
                             f'got {split!r}')
        self.num_samples = num_samples
        self.img_size = img_size
        self.split = split
        self.seed = seed
        self.class_appearance = bool(class_appearance)
        self.object_radius = check_object_radius(object_radius)
        self.equal_area = bool(equal_area)
        self.knn_bank = bool(knn_bank)
        super().__init__(
            ann_file='',
            data_root=data_root,
            pipeline=pipeline,
            test_mode=test_mode,
            **kwargs)

    @property
    def cache_dir(self) -> str:
        """str: The folder holding this split's images, masks and meta."""
        name = (f'{self.split}-n{self.num_samples}-s{self.img_size}-'
                f'seed{self.seed}' + ('' if self.class_appearance else '-ra') +
                self._geometry_suffix() + f'-v{GENERATOR_VERSION}')
        return osp.join(self.data_root, name)

    def _geometry_suffix(self) -> str:
        """Cache-name suffix of non-default object geometry ('' if none)."""
        suffix = ''
        if self.object_radius != tuple(DEFAULT_OBJECT_RADIUS):
            suffix += '-r{:g}-{:g}'.format(*self.object_radius)
        return suffix + ('-ea' if self.equal_area else '')

    def _meta(self) -> dict:
        geometry = {}
        if self._geometry_suffix():
            # Only then: caches written before these options stay valid.
            geometry = dict(object_radius=list(self.object_radius),
                            equal_area=self.equal_area)
        return dict(
            **geometry,
            generator_version=GENERATOR_VERSION,
            split=self.split,
            num_samples=self.num_samples,
            img_size=self.img_size,
            seed=self.seed,
            class_appearance=self.class_appearance,
            classes=list(SHAPE_CLASSES))

    def _generate(self, folder: str) -> List[int]:
        """Write all images and masks of this split into ``folder``."""
        os.makedirs(osp.join(folder, 'images'))
        os.makedirs(osp.join(folder, 'masks'))
        labels = []
        for idx in range(self.num_samples):
            label = idx % len(SHAPE_CLASSES)
            rng = np.random.default_rng(
                [self.seed, _SPLIT_IDS[self.split], idx])
            image, mask = render_sample(label, self.img_size, rng,
                                        self.class_appearance,
                                        self.object_radius, self.equal_area)
            Image.fromarray(image).save(
                osp.join(folder, 'images', f'{idx:06d}.png'))
            Image.fromarray(mask * 255).save(
                osp.join(folder, 'masks', f'{idx:06d}.png'))
            labels.append(label)
        with open(osp.join(folder, 'meta.json'), 'w') as f:
            json.dump(dict(self._meta(), labels=labels), f)
        return labels

    def _ensure_cache(self) -> List[int]:
        """Generate the cache once; return the labels stored in it."""
        meta_file = osp.join(self.cache_dir, 'meta.json')
        if not osp.exists(meta_file):
            os.makedirs(self.data_root, exist_ok=True)
            tmp = tempfile.mkdtemp(
                prefix='.tmp-' + osp.basename(self.cache_dir) + '-',
                dir=self.data_root)
            try:
                self._generate(osp.join(tmp, 'data'))
                try:
                    os.rename(osp.join(tmp, 'data'), self.cache_dir)
                except OSError:
                    # Another process finished first; its files are equal.
                    if not osp.exists(meta_file):
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        try:
            with open(meta_file) as f:
                meta = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(
                f'corrupt SyntheticShapes cache file {meta_file}: {e}; '
                'delete the folder to regenerate it') from e
        labels = meta.pop('labels', None)
        if meta != self._meta() or not isinstance(labels, list) or len(
                labels) != self.num_samples:
            raise ValueError(
                f'SyntheticShapes cache {self.cache_dir} does not match '
                f'the requested settings {self._meta()}; delete it to '
                'regenerate')
        return labels

    def load_data_list(self) -> List[dict]:
        """Generate the cache if needed and list its samples.

        Returns:
            list[dict]: One dict per sample with ``img_path``, ``gt_label``,
            ``mask_path`` and ``knn_bank``.
        """
        labels = self._ensure_cache()
        return [
            dict(
                img_path=osp.join(self.cache_dir, 'images', f'{i:06d}.png'),
                mask_path=osp.join(self.cache_dir, 'masks', f'{i:06d}.png'),
                gt_label=int(label),
                knn_bank=self.knn_bank) for i, label in enumerate(labels)
        ]

    def extra_repr(self) -> List[str]:
        """The extra repr information of the dataset."""
        return [
            f'Cache folder: \t{self.cache_dir}',
            f'Image size: \t{self.img_size}',
            f'Split: \t{self.split}',
        ]

