# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Checkpoints store a sha256 per tensor; a damaged byte is named at load."""
import os.path as osp
import struct
import zipfile

import numpy as np
import pytest
import torch
from mmengine.runner import CheckpointLoader
from runner_utils import runner_config, train_in_process

import ehm_mm  # noqa: F401  (installs the loader)
from ehm_mm.utils import CheckpointLoadError, load_local_checkpoint
from ehm_mm.utils.checkpoint_digest import (
    DIGEST_KEY,
    add_tensor_digests,
    tensor_digests,
    verify_tensor_digests,
)

TINY_CONFIG = osp.abspath(
    osp.join(osp.dirname(__file__), '..', 'data', 'configs',
             'ehm_mae_tiny_cpu.py'))


def _checkpoint() -> dict:
    return dict(
        meta=dict(iter=3, shape=np.array([4, 5])),
        state_dict=dict(w=torch.arange(6.).reshape(2, 3),
                        half=torch.ones(2, dtype=torch.bfloat16),
                        scalar=torch.tensor(2.5)),
        optimizer=dict(state={0: dict(exp_avg=torch.zeros(3))},
                       param_groups=[dict(lr=0.1, params=[0])]))


def test_digests_round_trip():
    checkpoint = _checkpoint()
    add_tensor_digests(checkpoint)
    assert sorted(checkpoint[DIGEST_KEY]['tensors']) == [
        'meta.shape', 'optimizer.state.0.exp_avg', 'state_dict.half',
        'state_dict.scalar', 'state_dict.w'
    ]
    assert verify_tensor_digests(checkpoint, 'x.pth') is True
    assert DIGEST_KEY not in checkpoint  # consumers see what was saved
    assert verify_tensor_digests(checkpoint, 'x.pth') is False  # none


@pytest.mark.parametrize('change, named', [
    (lambda c: c['state_dict']['w'].view(-1)[4].add_(1e-6),
     'state_dict.w (its bytes differ'),
    (lambda c: c['state_dict'].__setitem__('w', c['state_dict']['w'].t()),
     'state_dict.w (its bytes differ'),  # same bytes, other shape
    (lambda c: c['state_dict'].__setitem__(
        'half', c['state_dict']['half'].float()),
     'state_dict.half (its bytes differ'),  # other dtype
    (lambda c: c['optimizer']['state'][0].pop('exp_avg'),
     'optimizer.state.0.exp_avg (missing)'),
    (lambda c: c['state_dict'].__setitem__('extra', torch.ones(1)),
     'state_dict.extra (not in the saved checkpoint)'),
])
def test_each_difference_is_named(change, named):
    checkpoint = _checkpoint()
    add_tensor_digests(checkpoint)
    change(checkpoint)
    with pytest.raises(ValueError) as info:
        verify_tensor_digests(checkpoint, 'x.pth')
    assert 'Checkpoint x.pth is damaged: 1 tensor(s)' in str(info.value)
    assert named in str(info.value)


def _data_offset(path, info: zipfile.ZipInfo) -> int:
    """Where a stored (uncompressed) zip record's bytes start."""
    with open(path, 'rb') as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = struct.unpack('<HH', header[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _flip_a_byte_in_the_largest_tensor(path) -> None:
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if '/data/' in i.filename),
                   key=lambda i: i.file_size)
        assert info.compress_type == zipfile.ZIP_STORED
    raw = bytearray(path.read_bytes())
    raw[_data_offset(path, info) + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(raw))


@pytest.fixture(scope='module')
def saved(tmp_path_factory) -> dict:
    """Checkpoints of the tiny config after 1 iteration, with the digests
    (the default) and without them (``tensor_digests=False``)."""
    paths = {}
    for digests in (True, False):
        root = tmp_path_factory.mktemp(f'digests_{digests}')
        cfg = runner_config(TINY_CONFIG, str(root), 'digest', iters=1)
        cfg.default_hooks.checkpoint.tensor_digests = digests
        cfg.custom_hooks = []
        cfg.train_cfg.val_interval = 1000
        train_in_process(cfg)
        paths[digests] = root / 'work' / 'iter_1.pth'
    return paths


def test_saved_checkpoints_carry_digests(saved):
    raw = torch.load(saved[True], map_location='cpu', weights_only=True)
    names = raw[DIGEST_KEY]['tensors']
    assert 'state_dict.backbone.cls_token' in names
    assert any(name.startswith('optimizer.state.') for name in names)
    loaded = load_local_checkpoint(saved[True])
    assert DIGEST_KEY not in loaded and 'state_dict' in loaded
    plain = torch.load(saved[False], map_location='cpu', weights_only=True)
    assert DIGEST_KEY not in plain


def test_a_flipped_byte_names_the_tensor(saved, tmp_path):
    """One bit of one weight changed in the file: torch loads it without a
    word (the opt-out shows it); with the digests the loader, and so
    ``--resume``, ``load_from`` and the converters, name the file and the
    tensor."""
    original = torch.load(saved[True], map_location='cpu', weights_only=True)
    damaged = tmp_path / 'damaged.pth'
    damaged.write_bytes(saved[True].read_bytes())
    _flip_a_byte_in_the_largest_tensor(damaged)
    plain = torch.load(damaged, map_location='cpu', weights_only=True)
    before, after = tensor_digests(original), tensor_digests(plain)
    changed = [name for name in before if before[name] != after[name]]
    assert len(changed) == 1  # torch loaded the changed weight silently
    for load in (load_local_checkpoint,
                 lambda p: CheckpointLoader.load_checkpoint(str(p), 'cpu')):
        with pytest.raises(CheckpointLoadError) as info:
            load(damaged)
        message = str(info.value)
        assert f'Checkpoint {damaged} is damaged: 1 tensor(s)' in message
        assert f'{changed[0]} (its bytes differ' in message
    # Without digests (the opt-out) the same damage loads.
    no_digest = tmp_path / 'no_digest.pth'
    no_digest.write_bytes(saved[False].read_bytes())
    _flip_a_byte_in_the_largest_tensor(no_digest)
    load_local_checkpoint(no_digest)
