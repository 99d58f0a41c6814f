# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""SyntheticShapes: deterministic cache, labels, masks and loading errors."""
import json
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

import ehm_mm  # noqa: F401  (registers the dataset and transforms)
from ehm_mm.datasets import SyntheticShapes
from ehm_mm.datasets.shape_drawing import (
    SHAPE_CLASSES,
    draw_shape,
    render_sample,
)
from ehm_mm.datasets.transforms import LoadObjectMask

VAL_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadObjectMask'),
    dict(type='PackInputs', algorithm_keys=['gt_object_mask'])
]


def _read(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def test_same_settings_same_images_in_any_folder(tmp_path):
    first = SyntheticShapes(str(tmp_path / 'a'), num_samples=12, img_size=32)
    second = SyntheticShapes(str(tmp_path / 'b'), num_samples=12, img_size=32)
    assert len(first) == 12
    for i in range(12):
        a, b = first.get_data_info(i), second.get_data_info(i)
        assert a['gt_label'] == b['gt_label'] == i % len(SHAPE_CLASSES)
        assert np.array_equal(_read(a['img_path']), _read(b['img_path']))
        assert np.array_equal(_read(a['mask_path']), _read(b['mask_path']))
    # Another seed or split gives other images.
    other = SyntheticShapes(
        str(tmp_path / 'a'), num_samples=12, img_size=32, split='val')
    assert not np.array_equal(
        _read(first.get_data_info(0)['img_path']),
        _read(other.get_data_info(0)['img_path']))
    assert first.cache_dir != other.cache_dir
    # Random appearance: same layout and mask, other fill.
    random_tex = SyntheticShapes(
        str(tmp_path / 'a'), num_samples=12, img_size=32,
        class_appearance=False)
    assert random_tex.cache_dir.endswith('-ra-v2')
    same_mask = [
        np.array_equal(
            _read(first.get_data_info(i)['mask_path']),
            _read(random_tex.get_data_info(i)['mask_path']))
        for i in range(12)
    ]
    same_image = [
        np.array_equal(
            _read(first.get_data_info(i)['img_path']),
            _read(random_tex.get_data_info(i)['img_path']))
        for i in range(12)
    ]
    assert all(same_mask) and not all(same_image)


def test_cache_is_written_once_and_checked(tmp_path):
    dataset = SyntheticShapes(str(tmp_path), num_samples=6, img_size=32)
    path = dataset.get_data_info(0)['img_path']
    stamp = os.stat(path).st_mtime_ns
    again = SyntheticShapes(str(tmp_path), num_samples=6, img_size=32)
    assert again.get_data_info(0)['img_path'] == path
    assert os.stat(path).st_mtime_ns == stamp  # reused, not rewritten
    # No temporary folders are left behind.
    assert sorted(os.listdir(tmp_path)) == [osp.basename(dataset.cache_dir)]
    meta_file = osp.join(dataset.cache_dir, 'meta.json')
    with open(meta_file) as f:
        meta = json.load(f)
    meta['img_size'] = 64
    with open(meta_file, 'w') as f:
        json.dump(meta, f)
    with pytest.raises(ValueError, match='does not match'):
        SyntheticShapes(str(tmp_path), num_samples=6, img_size=32)


def test_pipeline_outputs_label_and_aligned_mask(tmp_path):
    dataset = SyntheticShapes(
        str(tmp_path),
        num_samples=6,
        img_size=32,
        split='val',
        pipeline=VAL_PIPELINE,
        test_mode=True)
    for i in range(6):
        out = dataset[i]
        assert out['inputs'].shape == (3, 32, 32)
        sample = out['data_samples']
        assert int(sample.gt_label) == i % len(SHAPE_CLASSES)
        mask = sample.gt_object_mask
        assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 1}
        # The object covers a real part of the image, not all of it.
        assert 0.05 < mask.mean() < 0.6
    # Masks match the renderer for the same seed stream.
    image, mask = render_sample(0, 32, np.random.default_rng([0, 1, 0]))
    assert np.array_equal(dataset[0]['data_samples'].gt_object_mask, mask)


@pytest.mark.parametrize('shape, expected_area', [
    ('circle', np.pi),
    ('square', 1.6**2),
    ('triangle', 3 * np.sqrt(3) / 4),
    ('cross', 2 * 0.64 * 1.9 - 0.64**2),
    ('ring', np.pi * (1 - 0.25)),
])
def test_shape_areas(shape, expected_area):
    size, radius = 400, 0.4
    inside = draw_shape(shape, size, (0.5, 0.5), radius, angle=0.3)
    area = inside.sum() / (radius * size)**2  # in units of radius^2
    assert area == pytest.approx(expected_area, rel=0.02)


def test_shape_classes_differ():
    masks = [
        draw_shape(shape, 64, (0.5, 0.5), 0.35, 0.0)
        for shape in SHAPE_CLASSES
    ]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert (masks[i] != masks[j]).mean() > 0.02


def test_missing_and_corrupt_files_name_their_path(tmp_path):
    dataset = SyntheticShapes(
        str(tmp_path),
        num_samples=3,
        img_size=32,
        pipeline=VAL_PIPELINE,
        test_mode=True)
    missing = dataset.get_data_info(0)['img_path']
    os.remove(missing)
    with pytest.raises(Exception, match=missing):
        dataset[0]
    corrupt = dataset.get_data_info(1)['img_path']
    with open(corrupt, 'wb') as f:
        f.write(b'not a png at all')
    with pytest.raises(Exception, match=corrupt):
        dataset[1]
    mask_path = dataset.get_data_info(2)['mask_path']
    with open(mask_path, 'wb') as f:
        f.write(b'\x89PNG broken')
    with pytest.raises(ValueError, match=mask_path):
        dataset[2]
    os.remove(mask_path)
    with pytest.raises(FileNotFoundError, match=mask_path):
        dataset[2]


def test_load_object_mask_checks_alignment(tmp_path):
    path = str(tmp_path / 'mask.png')
    Image.fromarray(np.full((8, 6), 255, dtype=np.uint8)).save(path)
    out = LoadObjectMask()(dict(mask_path=path))
    assert out['gt_object_mask'].dtype == np.uint8
    assert out['gt_object_mask'].sum() == 48
    with pytest.raises(ValueError, match='shape'):
        LoadObjectMask()(
            dict(mask_path=path, img=np.zeros((8, 8, 3), np.uint8)))
    with pytest.raises(KeyError, match='mask_path'):
        LoadObjectMask()(dict(img_path=path))


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_samples=0), 'num_samples'),
    (dict(img_size=4), 'img_size'),
    (dict(split='holdout'), 'split'),
    (dict(ann_file='x.txt'), 'ann_file'),
])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SyntheticShapes(str(tmp_path), **kwargs)


def test_equal_area_gives_every_class_the_same_size():
    sizes = {c: [] for c in range(len(SHAPE_CLASSES))}
    for i in range(360):
        rng = np.random.default_rng([0, 1, i])
        _, mask = render_sample(i % 6, 64, rng, False, (0.3, 0.39), True)
        sizes[i % 6].append(mask.sum())
    means = [np.mean(v) for v in sizes.values()]
    assert max(means) / min(means) < 1.1, means
    plain = {c: [] for c in range(len(SHAPE_CLASSES))}
    for i in range(360):
        rng = np.random.default_rng([0, 1, i])
        plain[i % 6].append(render_sample(i % 6, 64, rng, False)[1].sum())
    means = [np.mean(v) for v in plain.values()]
    assert max(means) / min(means) > 2.0  # circle vs star without it


def test_object_radius_options_are_checked():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match='0 < low <= high <= 0.5'):
        render_sample(0, 32, rng, object_radius=(0.4, 0.3))
    with pytest.raises(ValueError, match='two numbers'):
        render_sample(0, 32, rng, object_radius=0.3)
    with pytest.raises(ValueError, match='star of radius .* > 0.5'):
        render_sample(5, 32, rng, object_radius=(0.4, 0.4), equal_area=True)


def test_geometry_and_bank_options_in_cache_and_data_info(tmp_path):
    default = SyntheticShapes(str(tmp_path), num_samples=6, img_size=32)
    large = SyntheticShapes(str(tmp_path), num_samples=6, img_size=32,
                            class_appearance=False, object_radius=(0.3, 0.39),
                            equal_area=True, knn_bank=True)
    assert osp.basename(default.cache_dir) == 'train-n6-s32-seed0-v2'
    assert osp.basename(large.cache_dir) == (
        'train-n6-s32-seed0-ra-r0.3-0.39-ea-v2')
    assert default.get_data_info(0)['knn_bank'] is False
    assert large.get_data_info(0)['knn_bank'] is True
    big = [_read(large.get_data_info(i)['mask_path']).astype(bool).sum()
           for i in range(6)]
    small = [_read(default.get_data_info(i)['mask_path']).astype(bool).sum()
             for i in range(6)]
    assert np.mean(big) > np.mean(small)


def test_scenes_refuse_the_shapes_geometry_options(tmp_path):
    from ehm_mm.datasets import SyntheticScenes
    with pytest.raises(ValueError, match='SyntheticScenes draws its own'):
        SyntheticScenes(str(tmp_path), num_samples=2, img_size=32,
                        equal_area=True)
