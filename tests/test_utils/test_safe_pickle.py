# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Data pickles load plain data and never run code."""
import os
import pickle

import numpy as np
import pytest

from ehm_mm.utils.safe_pickle import load_data_pickle


class _Touch:
    """Unpickling it with ``pickle.load`` creates a file (runs code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f'touch {self.path}', )


def _ground_truth() -> dict:
    # What revisitop's gnd_*.pkl files hold: names, boxes, index arrays.
    return dict(
        imlist=['all_souls_000001', 'oxford_002'],
        qimlist=['all_souls_000013'],
        gnd=[
            dict(
                bbx=[136.5, 34.1, 648.5, 955.2],
                easy=np.array([0, 1]),
                hard=np.array([], dtype=np.int64),
                junk=[1])
        ],
        extra=(np.float64(0.5), np.int32(3), {1, 2}, b'raw', None, True))


@pytest.mark.parametrize('protocol', [2, 3, 4, 5])
def test_plain_data_loads(tmp_path, protocol):
    path = tmp_path / 'gnd.pkl'
    path.write_bytes(pickle.dumps(_ground_truth(), protocol=protocol))
    loaded = load_data_pickle(path)
    expected = _ground_truth()
    assert loaded['imlist'] == expected['imlist']
    assert loaded['gnd'][0]['bbx'] == expected['gnd'][0]['bbx']
    np.testing.assert_array_equal(loaded['gnd'][0]['easy'], [0, 1])
    assert loaded['gnd'][0]['hard'].dtype == np.int64
    assert loaded['extra'] == expected['extra']


def test_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / 'ran'
    path = tmp_path / 'gnd.pkl'
    path.write_bytes(
        pickle.dumps(dict(imlist=[], qimlist=[], gnd=[_Touch(marker)])))
    with pytest.raises(pickle.UnpicklingError) as info:
        load_data_pickle(path)
    assert str(path) in str(info.value)
    assert 'system' in str(info.value)
    assert not marker.exists()
    # The file does run code through plain pickle (the test is real).
    with open(path, 'rb') as f:
        pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize('content', [b'', b'\x80\x04garbage'])
def test_broken_files_are_named(tmp_path, content):
    path = tmp_path / 'gnd.pkl'
    path.write_bytes(content)
    with pytest.raises(pickle.UnpicklingError, match='gnd.pkl'):
        load_data_pickle(path)


def test_object_arrays_are_refused(tmp_path):
    """numpy trusts the pickled items of an object array (forged ones crash
    it), so data pickles may not hold them."""
    path = tmp_path / 'gnd.pkl'
    path.write_bytes(pickle.dumps(dict(ok=np.array([1, 2], dtype=object))))
    with pytest.raises(pickle.UnpicklingError, match='object dtype'):
        load_data_pickle(path)
