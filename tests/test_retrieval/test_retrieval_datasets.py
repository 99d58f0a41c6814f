# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The five retrieval datasets load their standard layouts."""
import os
import os.path as osp
import pickle

import numpy as np
import pytest
from mmpretrain.registry import DATASETS, TRANSFORMS
from PIL import Image

import ehm_mm.retrieval  # noqa: F401  (registers the benchmarks)


def _jpg(path, size=(12, 10), value=0):
    os.makedirs(osp.dirname(path), exist_ok=True)
    array = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    Image.fromarray(array).save(path, quality=90)


def _revisited_layout(root, name='roxford5k'):
    imlist = [f'db_{i}' for i in range(6)]
    qimlist = ['db_1', 'query_x']
    gnd = [
        dict(bbx=[2.0, 1.0, 9.6, 8.0], easy=[0, 2], hard=[3], junk=[4]),
        dict(bbx=np.array([0, 0, 5, 5]), easy=np.array([], dtype=int),
             hard=np.array([5]), junk=np.array([1, 2])),
    ]
    with open(osp.join(root, f'gnd_{name}.pkl'), 'wb') as f:
        pickle.dump(dict(imlist=imlist, qimlist=qimlist, gnd=gnd), f)
    for n in set(imlist + qimlist):
        _jpg(osp.join(root, 'jpg', f'{n}.jpg'))


@pytest.mark.parametrize('dataset_type, name',
                         [('ROxford5k', 'roxford5k'),
                          ('RParis6k', 'rparis6k')])
def test_revisited_layout(tmp_path, dataset_type, name):
    root = str(tmp_path / name)
    os.makedirs(root)
    _revisited_layout(root, name)
    dataset = DATASETS.build(dict(type=dataset_type, data_root=root))
    assert len(dataset) == 8  # 6 database images + 2 (cropped) queries
    meta = dataset.metainfo
    assert (meta['num_queries'], meta['num_database']) == (2, 6)
    database = [dataset.get_data_info(i) for i in range(6)]
    assert [d['db_idx'] for d in database] == list(range(6))
    assert all(d['query_idx'] == -1 for d in database)
    # A query is its own sample even when the image is also in the
    # database: it is cropped.
    query = dataset.get_data_info(6)
    assert (query['query_idx'], query['db_idx']) == (0, -1)
    assert query['img_path'].endswith(osp.join('jpg', 'db_1.jpg'))
    assert query['crop_bbox'] == [2.0, 1.0, 9.6, 8.0]
    assert query['retrieval_gt'] == dict(easy=[0, 2], hard=[3], junk=[4])
    second = dataset.get_data_info(7)
    assert second['retrieval_gt'] == dict(easy=[], hard=[5], junk=[1, 2])
    uncropped = DATASETS.build(
        dict(type=dataset_type, data_root=root, crop_queries=False))
    assert 'crop_bbox' not in uncropped.get_data_info(6)


def test_revisited_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='gnd_roxford5k.pkl'):
        DATASETS.build(dict(type='ROxford5k', data_root=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        DATASETS.build(
            dict(type='RParis6k', data_root=str(tmp_path / 'absent')))
    _revisited_layout(str(tmp_path))
    os.remove(tmp_path / 'jpg' / 'db_3.jpg')
    with pytest.raises(FileNotFoundError, match=r'db_3\.jpg'):
        DATASETS.build(dict(type='ROxford5k', data_root=str(tmp_path)))


def test_crop_to_bbox_and_pack():
    crop = TRANSFORMS.build(dict(type='CropToBBox'))
    img = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    out = crop(dict(img=img.copy(), crop_bbox=[2.0, 1.0, 9.6, 8.0]))
    assert out['img'].shape == (7, 8, 3)  # x 2..10, y 1..8
    assert np.array_equal(out['img'], img[1:8, 2:10])
    assert crop(dict(img=img))['img'] is img
    with pytest.raises(ValueError, match='empty'):
        crop(dict(img=img, crop_bbox=[20, 0, 30, 5]))
    pack = TRANSFORMS.build(dict(type='PackRetrievalInputs'))
    packed = pack(
        dict(img=img, img_path='a.jpg', query_idx=3, db_idx=-1,
             whiten_idx=-1, retrieval_gt=dict(positives=[1], junk=[])))
    sample = packed['data_samples']
    assert sample.query_idx == 3 and sample.db_idx == -1
    assert sample.retrieval_gt == dict(positives=[1], junk=[])


def _copydays_layout(root):
    for name in ('200000.jpg', '200100.jpg', '200200.jpg'):
        _jpg(osp.join(root, 'original', name))
        _jpg(osp.join(root, 'jpegqual', '3', name))
        _jpg(osp.join(root, 'crops', '10', name))
    for name in ('200001.jpg', '200002.jpg', '200201.jpg'):
        _jpg(osp.join(root, 'strong', name))


def test_copydays_layout(tmp_path):
    _copydays_layout(str(tmp_path))
    blocks = ['original', 'strong', 'jpegqual/3', 'crops/10']
    dataset = DATASETS.build(
        dict(type='Copydays', data_root=str(tmp_path), query_blocks=blocks))
    meta = dataset.metainfo
    assert (meta['num_queries'], meta['num_database']) == (12, 3)
    queries = [dataset.get_data_info(i) for i in range(3, 15)]
    by_block = {}
    for q in queries:
        by_block.setdefault(q['block'], []).append(q['retrieval_gt'])
    assert [g['positives'] for g in by_block['strong']] == [[0], [0], [2]]
    assert [g['positives'] for g in by_block['crops/10']] == [[0], [1], [2]]
    assert len(by_block['original']) == len(by_block['jpegqual/3']) == 3
    # The default blocks are the 20 of the standard protocol.
    with pytest.raises(FileNotFoundError, match='jpegqual/5'):
        DATASETS.build(dict(type='Copydays', data_root=str(tmp_path)))


def test_copydays_distractors_whitening_and_orphans(tmp_path):
    root = str(tmp_path / 'copydays')
    _copydays_layout(root)
    for i in range(4):
        _jpg(str(tmp_path / 'distract' / 'sub' / f'd{i}.png'))
        _jpg(str(tmp_path / 'whiten' / f'w{i}.jpg'))
    dataset = DATASETS.build(
        dict(
            type='Copydays',
            data_root=root,
            query_blocks=['strong'],
            distractor_folder=str(tmp_path / 'distract'),
            whitening_folder=str(tmp_path / 'whiten')))
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    assert [i['db_idx'] for i in infos if i['db_idx'] >= 0] == list(range(7))
    assert sum(i['query_idx'] >= 0 for i in infos) == 3
    assert [i['whiten_idx'] for i in infos[-4:]] == [0, 1, 2, 3]
    assert dataset.metainfo['num_whitening'] == 4
    _jpg(osp.join(root, 'strong', '209900.jpg'))
    with pytest.raises(ValueError, match='209900.jpg has no original'):
        DATASETS.build(
            dict(type='Copydays', data_root=root, query_blocks=['strong']))
    with pytest.raises(FileNotFoundError, match='distractor folder'):
        DATASETS.build(
            dict(type='Copydays', data_root=root, query_blocks=['original'],
                 distractor_folder=str(tmp_path / 'nothing')))


def test_holidays_layout(tmp_path):
    names = ['100000.jpg', '100001.jpg', '100002.jpg', '100100.jpg',
             '100101.jpg']
    for name in names:
        _jpg(str(tmp_path / 'jpg' / name))
    dataset = DATASETS.build(
        dict(type='INRIAHolidays', data_root=str(tmp_path)))
    # Queries are database images: one sample each.
    assert len(dataset) == 5
    infos = [dataset.get_data_info(i) for i in range(5)]
    assert [i['query_idx'] for i in infos] == [0, -1, -1, 1, -1]
    assert infos[0]['retrieval_gt'] == dict(positives=[1, 2], junk=[0])
    assert infos[3]['retrieval_gt'] == dict(positives=[4], junk=[3])
    os.remove(tmp_path / 'jpg' / '100100.jpg')
    with pytest.raises(ValueError, match='no query image 100100.jpg'):
        DATASETS.build(dict(type='INRIAHolidays', data_root=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match='jpg/GGGGNN.jpg'):
        DATASETS.build(
            dict(type='INRIAHolidays', data_root=str(tmp_path / 'none')))


def test_ukbench_layout(tmp_path):
    for i in range(8):
        _jpg(str(tmp_path / 'full' / f'ukbench{i:05d}.jpg'))
    dataset = DATASETS.build(dict(type='UKBench', data_root=str(tmp_path)))
    assert len(dataset) == 8
    infos = [dataset.get_data_info(i) for i in range(8)]
    assert [i['query_idx'] for i in infos] == list(range(8))
    assert [i['db_idx'] for i in infos] == list(range(8))
    assert infos[5]['retrieval_gt']['positives'] == [4, 5, 6, 7]
    os.remove(tmp_path / 'full' / 'ukbench00006.jpg')
    with pytest.raises(FileNotFoundError, match=r'missing numbers \[6\]'):
        DATASETS.build(dict(type='UKBench', data_root=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match='ukbench%05d'):
        DATASETS.build(dict(type='UKBench', data_root=str(tmp_path / 'x')))


class _Touch:
    """Unpickling it with ``pickle.load`` creates a file (runs code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f'touch {self.path}', )


def test_revisited_ground_truth_cannot_run_code(tmp_path):
    """A crafted gnd_*.pkl is refused and its command does not run."""
    _revisited_layout(str(tmp_path))
    marker = tmp_path / 'ran'
    with open(tmp_path / 'gnd_roxford5k.pkl', 'wb') as f:
        pickle.dump(
            dict(imlist=['db_0'], qimlist=[], gnd=[], note=_Touch(marker)),
            f)
    with pytest.raises(pickle.UnpicklingError, match='gnd_roxford5k.pkl'):
        DATASETS.build(dict(type='ROxford5k', data_root=str(tmp_path)))
    assert not marker.exists()
