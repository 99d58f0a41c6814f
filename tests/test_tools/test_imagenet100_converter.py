# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""tools/dataset_converters/imagenet100.py and the shipped class list."""
import hashlib
import os
import os.path as osp
import runpy

import pytest
from fake_imagenet import WNIDS, make_fake_imagenet, write_class_list

from ehm_mm.datasets import IMAGENET100_CLASSES_FILE, read_class_list

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TOOL = runpy.run_path(
    osp.join(REPO, 'tools', 'dataset_converters', 'imagenet100.py'))
#: The list's classes in the fake folder, in label order (not sorted).
LISTED = list(WNIDS[:3])


def read_lines(path):
    with open(path) as f:
        return [line.split() for line in f.read().splitlines()]


def test_shipped_list_is_cmc_imagenet100():
    wnids = read_class_list()
    assert len(wnids) == 100 == len(set(wnids))
    # CMC's order (labels are positions in it), first and last lines
    assert wnids[:3] == ['n02869837', 'n01749939', 'n02488291']
    assert wnids[-1] == 'n02090622'
    # the header's checksum is the checksum of the 100 lines
    with open(IMAGENET100_CLASSES_FILE) as f:
        text = f.read()
    body = ''.join(f'{w}\n' for w in wnids).encode()
    assert hashlib.sha256(body).hexdigest() in text


@pytest.mark.parametrize('content, message', [
    ('n0123\n', 'not a WordNet id'),
    ('n01440764\nn01440764\n', 'listed twice'),
    ('# only a comment\n', 'lists no class'),
])
def test_bad_class_list_is_refused(tmp_path, content, message):
    path = tmp_path / 'classes.txt'
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_class_list(str(path))
    with pytest.raises(FileNotFoundError, match='class list not found'):
        read_class_list(str(tmp_path / 'absent.txt'))


def _check_output(out, imagenet, val_paths):
    train = read_lines(osp.join(out, 'meta', 'train.txt'))
    # 3 images of each listed class, labels in the list's order
    assert train == [[f'{w}/{w}_{i}.JPEG', str(label)]
                     for label, w in enumerate(LISTED) for i in range(3)]
    val = read_lines(osp.join(out, 'meta', 'val.txt'))
    assert val == val_paths
    assert read_lines(osp.join(out, 'classes.txt')) == [[w] for w in LISTED]
    for path, _ in train:
        assert osp.isfile(osp.join(imagenet, 'train', path))
    for path, _ in val:
        assert osp.isfile(osp.join(imagenet, 'val', path))


def test_val_class_folders(tmp_path):
    imagenet, out = str(tmp_path / 'in1k'), str(tmp_path / 'in100')
    make_fake_imagenet(imagenet)
    classes = write_class_list(str(tmp_path / 'list.txt'), LISTED)
    assert TOOL['main']([imagenet, out, '--classes', classes]) == 0
    _check_output(out, imagenet, [
        [f'{w}/val_{w}_{i}.JPEG', str(label)]
        for label, w in enumerate(LISTED) for i in range(2)])
    assert not osp.exists(osp.join(out, 'train'))  # no links asked for


@pytest.mark.parametrize('labels', ['index', 'wnid'])
def test_flat_val_with_ground_truth(tmp_path, labels):
    imagenet, out = str(tmp_path / 'in1k'), str(tmp_path / 'in100')
    truth = make_fake_imagenet(imagenet, val_layout='flat', val_labels=labels)
    classes = write_class_list(str(tmp_path / 'list.txt'), LISTED)
    counts = TOOL['convert'](imagenet, out, classes=classes)
    assert counts == dict(classes=3, train=9, val=6)
    expected = sorted(([n, str(i)] for n, i in truth.items() if i < 3),
                      key=lambda s: (int(s[1]), s[0]))
    _check_output(out, imagenet, expected)


def test_symlink_mode_makes_a_dataset_root(tmp_path):
    for layout in ('folders', 'flat'):
        imagenet = str(tmp_path / f'in1k_{layout}')
        out = str(tmp_path / f'in100_{layout}')
        make_fake_imagenet(imagenet, val_layout=layout)
        classes = write_class_list(str(tmp_path / 'list.txt'), LISTED)
        TOOL['convert'](imagenet, out, classes=classes, symlink=True)
        for split in ('train', 'val'):
            for path, _ in read_lines(osp.join(out, 'meta', f'{split}.txt')):
                assert osp.isfile(osp.join(out, split, path)), path
        assert sorted(os.listdir(osp.join(out, 'train'))) == sorted(LISTED)
        # a second run keeps the links
        TOOL['convert'](imagenet, out, classes=classes, symlink=True)


def test_missing_class_folder_is_named(tmp_path):
    imagenet = str(tmp_path / 'in1k')
    make_fake_imagenet(imagenet)
    classes = write_class_list(str(tmp_path / 'list.txt'),
                               LISTED + ['n09999999'])
    with pytest.raises(FileNotFoundError, match='n09999999'):
        TOOL['convert'](imagenet, str(tmp_path / 'out'), classes=classes)
    # the shipped list: 97 of CMC's classes are absent here
    with pytest.raises(FileNotFoundError, match='97 of the 100'):
        TOOL['convert'](imagenet, str(tmp_path / 'out'))


def test_empty_class_is_named(tmp_path):
    imagenet = str(tmp_path / 'in1k')
    make_fake_imagenet(imagenet)
    folder = osp.join(imagenet, 'train', LISTED[1])
    for name in os.listdir(folder):
        os.remove(osp.join(folder, name))
    open(osp.join(folder, 'notes.txt'), 'w').close()  # not an image
    classes = write_class_list(str(tmp_path / 'list.txt'), LISTED)
    with pytest.raises(ValueError, match=f'train class {LISTED[1]}'):
        TOOL['convert'](imagenet, str(tmp_path / 'out'), classes=classes)


def test_missing_val_ground_truth_is_named(tmp_path):
    imagenet = str(tmp_path / 'in1k')
    make_fake_imagenet(imagenet, val_layout='flat')
    os.remove(osp.join(imagenet, 'meta', 'val.txt'))
    classes = write_class_list(str(tmp_path / 'list.txt'), LISTED)
    with pytest.raises(FileNotFoundError,
                       match='no validation ground truth.*--val-ann'):
        TOOL['convert'](imagenet, str(tmp_path / 'out'), classes=classes)


def test_bad_or_incomplete_ground_truth_is_named(tmp_path):
    imagenet = str(tmp_path / 'in1k')
    make_fake_imagenet(imagenet, val_layout='flat')
    classes = write_class_list(str(tmp_path / 'list.txt'), LISTED)
    out = str(tmp_path / 'out')
    gt = tmp_path / 'gt.txt'
    gt.write_text('ILSVRC2012_val_00000001.JPEG 7\n')  # 4 train folders
    with pytest.raises(ValueError, match="label '7'"):
        TOOL['convert'](imagenet, out, classes=classes, val_ann=str(gt))
    gt.write_text('ILSVRC2012_val_00000001.JPEG\n')
    with pytest.raises(ValueError, match='expected "file label"'):
        TOOL['convert'](imagenet, out, classes=classes, val_ann=str(gt))
    gt.write_text(f'ILSVRC2012_val_00000099.JPEG {LISTED[0]}\n')
    with pytest.raises(FileNotFoundError, match='00000099'):
        TOOL['convert'](imagenet, out, classes=classes, val_ann=str(gt))
    gt.write_text(f'ILSVRC2012_val_00000001.JPEG {LISTED[0]}\n')
    with pytest.raises(ValueError, match='no validation image for 2'):
        TOOL['convert'](imagenet, out, classes=classes, val_ann=str(gt))


def test_refuses_its_input_as_output_and_a_missing_split(tmp_path):
    imagenet = str(tmp_path / 'in1k')
    make_fake_imagenet(imagenet)
    classes = write_class_list(str(tmp_path / 'list.txt'), LISTED)
    with pytest.raises(ValueError, match='must not be the ImageNet-1K'):
        TOOL['convert'](imagenet, imagenet, classes=classes)
    with pytest.raises(FileNotFoundError, match='train/<wnid>'):
        TOOL['convert'](str(tmp_path / 'nothing'), str(tmp_path / 'out'),
                        classes=classes)
