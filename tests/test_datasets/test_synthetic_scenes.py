# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""SyntheticScenes: several two-part objects, occlusion, label maps."""
import numpy as np
import pytest
from mmpretrain.registry import DATASETS
from PIL import Image

import ehm_mm  # noqa: F401  (registers the dataset and transforms)
from ehm_mm.datasets import SyntheticScenes
from ehm_mm.datasets.shape_drawing import SHAPE_CLASSES
from ehm_mm.datasets.synthetic_scenes import (
    object_parts,
    render_scene,
    scene_layout,
)
from ehm_mm.datasets.transforms import LoadLabelMap


def _read(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def test_render_scene_maps_agree():
    occluded = several = 0
    for i in range(36):
        label = i % len(SHAPE_CLASSES)
        rng = np.random.default_rng([0, 0, i, 1])
        image, mask, classes, parts = render_scene(label, 64, rng)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        # the main object is visible, of its class, and made of its parts
        assert mask.sum() > 0
        assert np.array_equal(mask == 1, (parts == 1) | (parts == 2))
        assert bool((classes[mask == 1] == label + 1).all())
        # several objects, background where no part
        several += int(len(set(np.unique(classes)) - {0}) >= 2)
        assert np.array_equal(classes == 0, parts == 0)
        # the parts of an object share its class
        for part in np.unique(parts[parts > 0]):
            assert len(np.unique(classes[parts == part])) == 1
        # at least 60% of the main object is visible
        objects = scene_layout(label, 64,
                               np.random.default_rng([0, 0, i, 1]))
        full = int((objects[0][1][0] | objects[0][1][1]).sum())
        assert mask.sum() >= 0.6 * full
        occluded += int(mask.sum() < full)
    assert occluded > 0  # occlusion happens
    assert several >= 30  # (an object below the main one may be hidden)


def test_object_parts_split_every_shape():
    for label in range(len(SHAPE_CLASSES)):
        inner, outer = object_parts(label, 64, (0.5, 0.5), 0.3, 0.4)
        assert inner.sum() > 0 and outer.sum() > 0
        assert not (inner & outer).any()


def test_dataset_cache_and_pipeline(tmp_path):
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadObjectMask'),
        dict(type='LoadLabelMap'),
        dict(type='PackInputs',
             algorithm_keys=['gt_object_mask', 'gt_seg_map'])
    ]
    dataset = DATASETS.build(
        dict(type='SyntheticScenes', data_root=str(tmp_path), num_samples=8,
             img_size=32, split='val', pipeline=pipeline))
    assert isinstance(dataset, SyntheticScenes)
    assert 'scenes-val-n8-s32' in dataset.cache_dir
    again = SyntheticScenes(str(tmp_path), num_samples=8, img_size=32,
                            split='val')
    info = again.get_data_info(3)
    assert info['gt_label'] == 3
    assert np.array_equal(_read(info['seg_path']),
                          _read(dataset.get_data_info(3)['seg_path']))
    sample = dataset[3]['data_samples']
    seg = np.asarray(sample.gt_seg_map)
    assert seg.shape == (32, 32) and seg.max() <= len(SHAPE_CLASSES)
    assert bool((seg[np.asarray(sample.gt_object_mask) == 1] == 4).all())
    # not the same images as SyntheticShapes' cache of the same settings
    shapes = DATASETS.build(
        dict(type='SyntheticShapes', data_root=str(tmp_path), num_samples=8,
             img_size=32, split='val'))
    assert shapes.cache_dir != dataset.cache_dir


def test_load_label_map_errors(tmp_path):
    rgb = tmp_path / 'rgb.png'
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb)
    with pytest.raises(ValueError, match='label map'):
        LoadLabelMap()(dict(seg_path=str(rgb)))
    with pytest.raises(FileNotFoundError):
        LoadLabelMap()(dict(seg_path=str(tmp_path / 'none.png')))
    with pytest.raises(KeyError, match='seg_path'):
        LoadLabelMap()(dict())
    grey = tmp_path / 'grey.png'
    Image.fromarray(np.full((4, 4), 5, np.uint8)).save(grey)
    with pytest.raises(ValueError, match='shape'):
        LoadLabelMap()(dict(seg_path=str(grey), img=np.zeros((5, 4, 3))))
    out = LoadLabelMap(out_key='x')(dict(seg_path=str(grey)))
    assert out['x'].dtype == np.uint8 and int(out['x'].max()) == 5
