# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""A crash during a checkpoint save never loses the previous checkpoint."""
import os
import os.path as osp
import subprocess
import sys
import time

import pytest
import torch
from mmengine.fileio import get_file_backend

import ehm_mm  # noqa: F401
from ehm_mm.utils.atomic_io import (
    TEMP_PREFIX,
    AtomicLocalBackend,
    atomic_path,
    atomic_write_bytes,
    remove_stale_temporaries,
)

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TINY = osp.join(REPO_ROOT, 'tests', 'data', 'configs', 'ehm_mae_tiny_cpu.py')

# Runs tools/train.py with every write to a file whose name contains
# PATTERN slowed down: half of the bytes are written and synced, MARKER is
# created, then the writer sleeps (until the test kills the process).
SLOW_SAVE_LAUNCHER = r'''
import builtins, os, runpy, sys, time
marker, pattern = sys.argv[1], sys.argv[2]
real_open = builtins.open

class SlowFile:
    def __init__(self, f):
        self._f = f
    def write(self, data):
        self._f.write(data[:len(data) // 2])
        self._f.flush()
        os.fsync(self._f.fileno())
        real_open(marker, 'w').close()
        time.sleep(600)
    def __getattr__(self, name):
        return getattr(self._f, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self._f.__exit__(*exc)

def slow_open(file, mode='r', *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    if 'w' in mode and pattern in os.path.basename(str(file)):
        return SlowFile(f)
    return f

builtins.open = slow_open
sys.argv = ['tools/train.py'] + sys.argv[3:]
runpy.run_path('tools/train.py', run_name='__main__')
'''


def test_atomic_write_replaces_whole_files(tmp_path):
    path = tmp_path / 'sub' / 'a.bin'
    atomic_write_bytes(b'old', path)
    atomic_write_bytes(b'new content', path)
    assert path.read_bytes() == b'new content'
    assert os.listdir(tmp_path / 'sub') == ['a.bin']
    # Permissions as a plain open() would give them, not mkstemp's 0600.
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / 'ckpt.pth'
    path.write_bytes(b'complete')
    with pytest.raises(RuntimeError, match='disk full'):
        with atomic_path(path) as tmp:
            with open(tmp, 'wb') as f:
                f.write(b'half')
            raise RuntimeError('disk full')
    assert path.read_bytes() == b'complete'
    assert os.listdir(tmp_path) == ['ckpt.pth']


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / f'{TEMP_PREFIX}iter_8.pth.abc').write_bytes(b'half')
    (tmp_path / 'iter_4.pth').write_bytes(b'ok')
    removed = remove_stale_temporaries(tmp_path)
    assert [osp.basename(p)
            for p in removed] == [f'{TEMP_PREFIX}iter_8.pth.abc']
    assert os.listdir(tmp_path) == ['iter_4.pth']


def test_backend_is_registered(tmp_path):
    backend = get_file_backend(
        str(tmp_path), backend_args=dict(backend='ehm_atomic'))
    assert isinstance(backend, AtomicLocalBackend)
    backend.put(b'x', tmp_path / 'f')
    backend.put_text('y', tmp_path / 'g')
    assert (tmp_path / 'f').read_bytes() == b'x'
    assert (tmp_path / 'g').read_text() == 'y'


def test_file_client_args_are_refused():
    from ehm_mm.engine.hooks import AtomicCheckpointHook
    with pytest.raises(ValueError, match='backend_args'):
        AtomicCheckpointHook(
            interval=1, file_client_args=dict(backend='disk'))


def test_kill_during_save_keeps_a_resumable_checkpoint(tmp_path):
    """Kill training while it writes iter_8.pth (max_keep_ckpts=1).

    mmengine's own hook deleted iter_4.pth before writing iter_8.pth in
    place, so the kill left a truncated iter_8.pth and a last_checkpoint
    naming the deleted iter_4.pth: ``--resume`` failed.
    """
    work_dir = tmp_path / 'work'
    data = tmp_path / 'data'
    marker = tmp_path / 'saving'
    options = [
        '--work-dir',
        str(work_dir), '--no-validate', '--cfg-options',
        f'train_dataloader.dataset.data_root={data}', 'custom_hooks=[]',
        'train_cfg.max_iters=12', 'default_hooks.checkpoint.interval=4',
        'default_hooks.checkpoint.max_keep_ckpts=1'
    ]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [REPO_ROOT] + [p for p in [os.environ.get('PYTHONPATH')] if p]),
        OMP_NUM_THREADS='1')
    launcher = tmp_path / 'slow_save_train.py'
    launcher.write_text(SLOW_SAVE_LAUNCHER)
    proc = subprocess.Popen(
        [sys.executable,
         str(launcher),
         str(marker), 'iter_8.pth', TINY, *options],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True)
    try:
        deadline = time.monotonic() + 600
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail('training ended before the slowed save:\n' +
                            proc.stdout.read()[-4000:])
            if time.monotonic() > deadline:
                pytest.fail('the slowed save never started')
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()

    # The previous checkpoint is complete and named by last_checkpoint.
    last = (work_dir / 'last_checkpoint').read_text().strip()
    assert osp.basename(last) == 'iter_4.pth'
    assert torch.load(last, map_location='cpu')['meta']['iter'] == 4
    assert not (work_dir / 'iter_8.pth').exists()

    resumed = subprocess.run(
        [sys.executable, 'tools/train.py', TINY, '--resume', *options],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-6000:]
    assert 'resumed epoch: 0, iter: 4' in log
    assert 'left by a save that did not finish' in log
    assert torch.load(work_dir / 'iter_12.pth',
                      map_location='cpu')['meta']['iter'] == 12
    # max_keep_ckpts=1: the older ones are gone, no temporary file is left.
    assert sorted(f for f in os.listdir(work_dir) if f.endswith('.pth')
                  or f.startswith(TEMP_PREFIX)) == ['iter_12.pth']


def test_best_checkpoint_with_validation_before_training(tmp_path, run_tool):
    """``save_best`` works, also after a validation before ``before_train``.

    EvaluationSummaryHook validates before the checkpoint hook's
    ``before_train``; the previous best file is replaced, not accumulated.
    """
    work_dir = tmp_path / 'work'
    data = tmp_path / 'data'
    run_tool([
        sys.executable, 'tools/train.py', TINY, '--work-dir',
        str(work_dir), '--cfg-options',
        f'train_dataloader.dataset.data_root={data}',
        f'val_dataloader.dataset.data_root={data}', 'train_cfg.max_iters=8',
        'train_cfg.val_interval=4', 'default_hooks.checkpoint.interval=4',
        'default_hooks.checkpoint.max_keep_ckpts=1',
        'default_hooks.checkpoint.save_best=hierarchy/best_iou',
        'default_hooks.checkpoint.rule=less'
    ])
    files = sorted(f for f in os.listdir(work_dir) if f.endswith('.pth'))
    # Validations at iterations 0 (before training), 4 and 8: whichever was
    # best, exactly one best file is left, and it loads.
    best = [f for f in files if f.startswith('best_')]
    assert len(best) == 1, files
    assert 'iter_8.pth' in files and 'iter_4.pth' not in files
    state = torch.load(work_dir / best[0], map_location='cpu')
    assert state['meta']['iter'] in (0, 4, 8)
    assert not [f for f in os.listdir(work_dir) if f.startswith(TEMP_PREFIX)]


class _Runner:
    """What the hook uses of mmengine's Runner; saves write a marker."""

    def __init__(self, work_dir):
        import uuid

        from mmengine.logging import MessageHub, MMLogger
        self.work_dir = str(work_dir)
        self.message_hub = MessageHub(f'atomic_{uuid.uuid4().hex}')
        self.logger = MMLogger.get_current_instance()
        self.model = torch.nn.Linear(2, 2)
        self.iter = 0

    def save_checkpoint(self, out_dir, filename, backend_args=None, **_):
        path = osp.join(out_dir, filename)
        get_file_backend(path, backend_args=backend_args).put(b'ckpt', path)


@pytest.mark.parametrize('max_keep, kept', [(-1, [1, 2, 3]), (2, [2, 3])])
def test_saves_and_deletions(tmp_path, max_keep, kept):
    from ehm_mm.engine.hooks import AtomicCheckpointHook
    hook = AtomicCheckpointHook(
        interval=1, by_epoch=False, max_keep_ckpts=max_keep)
    runner = _Runner(tmp_path)
    hook.before_train(runner)
    for step in (1, 2, 3):
        hook._save_checkpoint_with_step(runner, step, meta=dict(iter=step))
    assert sorted(os.listdir(tmp_path)) == sorted(
        [f'iter_{i}.pth' for i in kept] + ['last_checkpoint'])
    assert (tmp_path / 'last_checkpoint').read_text() == str(
        tmp_path / 'iter_3.pth')


class _Usage:
    """What ``shutil.disk_usage`` returns, with ``free`` bytes free."""

    def __init__(self, free: int) -> None:
        self.total, self.used, self.free = 2**30, 2**30 - free, free


def test_too_little_free_space_is_named_before_writing(tmp_path,
                                                       monkeypatch):
    """mmengine writes ``torch.save``'s bytes through ``backend.put``: with
    less room than the new checkpoint needs, nothing is written and the
    error names the file, the room needed and why (two checkpoints)."""
    import errno
    import shutil
    path = tmp_path / 'iter_8.pth'
    old = tmp_path / 'iter_4.pth'
    old.write_bytes(b'complete')
    monkeypatch.setattr(shutil, 'disk_usage', lambda _: _Usage(3 * 2**20))
    with pytest.raises(OSError) as info:
        AtomicLocalBackend().put(b'x' * (5 * 2**20), path)
    assert info.value.errno == errno.ENOSPC
    message = str(info.value)
    assert str(path) in message
    assert 'needs 5.0 MiB free' in message and '3.0 MiB are free' in message
    assert 'two checkpoints' in message
    assert sorted(os.listdir(tmp_path)) == ['iter_4.pth']


def test_disk_full_during_the_write_names_the_file(tmp_path, monkeypatch):
    """A write that fails with ENOSPC (a patched writer: the disk filled
    while writing) names the file and the room needed instead of a bare
    ``[Errno 28] No space left on device``; the old file stays."""
    import builtins
    import errno
    real_open = builtins.open
    path = tmp_path / 'iter_8.pth'
    path.write_bytes(b'complete')

    class _FullDisk:

        def __init__(self, f):
            self._f = f

        def write(self, data):
            self._f.write(data[:len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    def full_open(file, mode='r', *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return _FullDisk(f) if TEMP_PREFIX in str(file) else f

    monkeypatch.setattr(builtins, 'open', full_open)
    with pytest.raises(OSError) as info:
        AtomicLocalBackend().put(b'new' * 1000, path)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    message = str(info.value)
    assert 'No space left on device' in message and str(path) in message
    assert 'needs 0.0 MiB free' in message and 'two checkpoints' in message
    assert path.read_bytes() == b'complete'
    assert os.listdir(tmp_path) == ['iter_8.pth']


def test_a_nonfinite_model_is_never_saved(tmp_path):
    """A model holding NaN is not written: the save raises an error naming
    the tensors and the last good checkpoint, which is kept (with
    ``max_keep_ckpts=1`` it would otherwise be deleted) and stays in
    ``last_checkpoint``."""
    from ehm_mm.engine.hooks import AtomicCheckpointHook, TrainingDivergedError
    hook = AtomicCheckpointHook(interval=1, by_epoch=False, max_keep_ckpts=1)
    runner = _Runner(tmp_path)
    hook.before_train(runner)
    hook._save_checkpoint_with_step(runner, 1, meta=dict(iter=1))
    with torch.no_grad():
        runner.model.weight[0, 0] = float('nan')
    with pytest.raises(TrainingDivergedError) as info:
        hook._save_checkpoint_with_step(runner, 2, meta=dict(iter=2))
    message = str(info.value)
    assert 'Not saving iter_2.pth' in message
    assert '1 of 2 floating-point tensors' in message and 'weight' in message
    assert f'last good checkpoint is {tmp_path / "iter_1.pth"}' in message
    assert 'lower learning rate' in message
    assert sorted(os.listdir(tmp_path)) == ['iter_1.pth', 'last_checkpoint']
    assert (tmp_path / 'last_checkpoint').read_text() == str(
        tmp_path / 'iter_1.pth')
