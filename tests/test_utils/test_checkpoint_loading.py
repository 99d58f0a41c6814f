# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Damaged or unsafe checkpoints fail with a clear, safe message."""
import os
import os.path as osp
import sys

import pytest
import torch
from mmengine.runner import CheckpointLoader

import ehm_mm  # noqa: F401  (installs the loader)
from ehm_mm.utils import CheckpointLoadError, load_local_checkpoint

TINY = osp.abspath(
    osp.join(
        osp.dirname(__file__), '..', 'data', 'configs',
        'ehm_mae_tiny_cpu.py'))


class _RunsCode:

    def __reduce__(self):
        return os.system, ('echo should-never-run',)


def _damaged_files(folder) -> dict:
    good = folder / 'good.pth'
    torch.save(dict(state_dict=dict(w=torch.ones(3))), good)
    data = good.read_bytes()
    files = dict(
        empty=b'', truncated=data[:len(data) // 2], random=os.urandom(4096))
    paths = {}
    for name, content in files.items():
        paths[name] = folder / f'{name}.pth'
        paths[name].write_bytes(content)
    paths['code'] = folder / 'code.pth'
    torch.save(dict(state_dict=dict(w=_RunsCode())), paths['code'])
    return paths


WHAT = dict(
    empty='is empty (0 bytes)',
    truncated='is damaged or truncated',
    random='is not a PyTorch checkpoint, or is damaged',
    code='holds Python objects that weights-only loading refuses')


def _check_message(message: str, path, what: str) -> None:
    assert str(path) in message
    assert WHAT[what] in message
    assert 'Do not retry with weights_only=False' in message
    # None of torch's advice to switch the check off or allow-list globals.
    assert 'will likely succeed' not in message
    assert 'add_safe_globals' not in message


@pytest.mark.parametrize('what', sorted(WHAT))
def test_loader_names_file_and_problem(tmp_path, what):
    path = _damaged_files(tmp_path)[what]
    with pytest.raises(CheckpointLoadError) as info:
        load_local_checkpoint(str(path))
    _check_message(str(info.value), path, what)
    # mmengine's loader of local paths (load_from, init_cfg, converters,
    # retrieval) is this one.
    with pytest.raises(CheckpointLoadError) as info:
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    _check_message(str(info.value), path, what)


def test_good_checkpoint_and_missing_file(tmp_path):
    path = tmp_path / 'good.pth'
    torch.save(dict(state_dict=dict(w=torch.ones(3))), path)
    loaded = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert torch.equal(loaded['state_dict']['w'], torch.ones(3))
    with pytest.raises(FileNotFoundError, match='can not be found'):
        load_local_checkpoint(str(tmp_path / 'missing.pth'))


def test_resume_from_a_damaged_checkpoint_says_what_is_wrong(
        tmp_path, run_tool):
    """``tools/train.py --resume`` on a truncated last checkpoint."""
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    damaged = _damaged_files(tmp_path)['truncated']
    (work_dir / 'last_checkpoint').write_text(str(damaged))
    with pytest.raises(AssertionError) as info:
        run_tool([
            sys.executable, 'tools/train.py', TINY, '--work-dir',
            str(work_dir), '--resume', '--no-validate', '--cfg-options',
            f'train_dataloader.dataset.data_root={tmp_path / "data"}',
            'custom_hooks=[]'
        ])
    output = str(info.value)
    assert 'CheckpointLoadError' in output
    _check_message(output, damaged, 'truncated')


def test_random_bytes_never_escape_as_unpickler_internals(tmp_path):
    """Random files make torch's unpickler fail in many ways (an empty
    stack, an unknown memo key, bytes that are not UTF-8), about one in
    ten not as UnpicklingError; each must still be a CheckpointLoadError
    naming the file."""
    import random
    rng = random.Random(0)
    path = tmp_path / 'random.pth'
    for _ in range(64):
        path.write_bytes(bytes(rng.getrandbits(8) for _ in range(4096)))
        with pytest.raises(CheckpointLoadError) as info:
            load_local_checkpoint(path)
        _check_message(str(info.value), path, 'random')


@pytest.mark.parametrize('error', [
    IndexError('pop from empty list'),
    KeyError(133),
    UnicodeDecodeError('utf-8', b'\xaa', 0, 1, 'invalid start byte'),
])
def test_unpickler_internal_errors_are_damage(tmp_path, monkeypatch, error):
    path = tmp_path / 'x.pth'
    path.write_bytes(b'not empty')

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, 'load', fail)
    with pytest.raises(CheckpointLoadError) as info:
        load_local_checkpoint(path)
    _check_message(str(info.value), path, 'random')
    assert type(error).__name__ in str(info.value)


def _object_array_checkpoint(path, forged_items: bytes = None,
                             shape: int = 2) -> None:
    """A checkpoint holding ``np.array([1, 2], dtype=object)``; with
    ``forged_items`` the pickled list of its items is replaced by those
    bytes (same length), with ``shape`` its length is changed."""
    import numpy as np
    torch.save(dict(meta=dict(a=np.array([1, 2], dtype=object))), path)
    raw = path.read_bytes()
    items = b']q\x15(K\x01K\x02e'  # EMPTY_LIST, memo, MARK, 1, 2, APPENDS
    shape_bytes = b'(K\x01K\x02\x85q\x0ecnumpy\ndtype'  # version 1, (2, )
    assert raw.count(items) == 1 and raw.count(shape_bytes) == 1
    if forged_items is not None:
        assert len(forged_items) == len(items)
        raw = raw.replace(items, forged_items)
    raw = raw.replace(shape_bytes,
                      shape_bytes.replace(b'K\x02', bytes([75, shape])))
    path.write_bytes(raw)


@pytest.mark.parametrize('forgery', ['none', 'string', 'long-shape'])
def test_object_arrays_are_refused_with_the_file_named(tmp_path, forgery):
    """numpy rebuilds an object array from a pickled list it trusts: a
    string there gave a bare ``TypeError: object pickle not returning
    list``; a shape longer than the list crashes the process (run in a
    subprocess here so that a regression fails the test, not the run)."""
    path = tmp_path / f'{forgery}.pth'
    _object_array_checkpoint(
        path,
        forged_items=(b'X\x04\x00\x00\x00abcd'
                      if forgery == 'string' else None),
        shape=255 if forgery == 'long-shape' else 2)
    code = ('import sys; import ehm_mm; '
            'from ehm_mm.utils import load_local_checkpoint as load; '
            f'load({str(path)!r})')
    result = __import__('subprocess').run(
        [sys.executable, '-c', code], capture_output=True, text=True,
        cwd=osp.join(osp.dirname(__file__), '..', '..'), timeout=120)
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(
        'ehm_mm.utils.checkpoint_loading.CheckpointLoadError'), last_line
    assert str(path) in last_line
    assert 'object dtype' in last_line
    _check_message(last_line, path, 'code')


def test_every_changed_byte_of_the_pickle_is_a_named_error(tmp_path):
    """Each byte of the pickle of a checkpoint with numpy scalars, arrays
    and a HistoryBuffer (what mmengine writes) set to 0 and to 255: the
    file loads or fails with a CheckpointLoadError, never with numpy's or
    the unpickler's own error (``TypeError: data type 'OF' not
    understood``, ``LookupError: unknown encoding`` before)."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    history = HistoryBuffer()
    history.update(1.5)
    good = tmp_path / 'good.pth'
    torch.save(
        dict(meta=dict(seed=np.int64(3), scale=np.float64(0.5),
                       shape=np.array([4, 5])),
             message_hub=dict(loss=history),
             state_dict=dict(w=torch.ones(3))), good)
    raw = good.read_bytes()
    start = raw.index(b'\x80\x02')  # the pickle's PROTO opcode
    end = raw.index(b'PK', start)  # the next zip record
    path = tmp_path / 'changed.pth'
    escaped = []
    for position in range(start, end):
        for value in (0, 255):
            changed = bytearray(raw)
            changed[position] = value
            path.write_bytes(bytes(changed))
            try:
                load_local_checkpoint(path)
            except CheckpointLoadError as error:
                assert str(path) in str(error)
            except Exception as error:  # noqa: BLE001
                escaped.append((position, value, repr(error)))
    assert escaped == [], escaped[:20]
