# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""tools/train.py on CPU: AMP fallback, training and ``--resume``."""
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import ehm_mm  # noqa: F401  (torch.load of mmengine checkpoints)

TINY_MAE = osp.join('tests', 'data', 'configs', 'tiny_mae_cpu.py')


@pytest.fixture(scope='module')
def train(tmp_path_factory, run_tool):
    """Run tools/train.py on the tiny MAE config and a folder of images."""
    folder = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    for i in range(8):
        array = rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f'img_{i}.png')

    def _train(work_dir: str, *extra: str):
        return run_tool([
            sys.executable, 'tools/train.py', TINY_MAE, '--work-dir',
            work_dir, '--cfg-options',
            f'train_dataloader.dataset.data_root={folder}', *extra
        ])

    return _train


@pytest.fixture(scope='module')
def four_iter_run(train, tmp_path_factory):
    """Work dir of a 4-iteration run (``iter_4.pth``) and its log."""
    work_dir = str(tmp_path_factory.mktemp('run'))
    proc = train(work_dir, 'train_cfg.max_iters=4')
    return work_dir, proc.stdout + proc.stderr


def test_train_stop_resume_continue(four_iter_run, train):
    """Train 4 iterations, stop, ``--resume`` and continue to 8.

    Resuming loads mmengine's full checkpoint (message hub with
    ``HistoryBuffer``s, optimizer, scheduler states) through ``torch.load``
    with torch's default ``weights_only=True``; without ehm_mm's allow-list
    this fails on torch >= 2.6.
    """
    work_dir, log = four_iter_run
    assert "'AmpOptimWrapper' is replaced by 'OptimWrapper'" in log
    first = osp.join(work_dir, 'iter_4.pth')
    assert osp.isfile(first)
    assert not osp.exists(osp.join(work_dir, 'iter_8.pth'))

    proc = train(work_dir, '--resume')
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 0, iter: 4' in log
    assert 'Iter(train) [5/8]' in log
    assert 'Iter(train) [1/8]' not in log
    last = torch.load(osp.join(work_dir, 'iter_8.pth'), map_location='cpu')
    assert last['meta']['iter'] == 8
    start = torch.load(first, map_location='cpu')
    changed = [
        key for key in start['state_dict']
        if not torch.equal(start['state_dict'][key], last['state_dict'][key])
    ]
    assert changed, 'resumed training did not update any weight'


def test_checkpoint_needs_the_allow_list(four_iter_run, run_tool):
    """A plain ``torch.load`` of an mmengine checkpoint fails on torch>=2.6
    unless ehm_mm registered mmengine's classes as safe globals."""
    ckpt = osp.join(four_iter_run[0], 'iter_4.pth')
    probe = (
        'import sys, torch\n'
        'if sys.argv[2] == "with": import ehm_mm\n'
        'try:\n'
        '    torch.load(sys.argv[1], map_location="cpu")\n'
        '    print("LOADED")\n'
        'except Exception as e:\n'
        '    print("FAILED", type(e).__name__, e)\n')
    with_fix = run_tool([sys.executable, '-c', probe, ckpt, 'with'])
    assert with_fix.stdout.strip() == 'LOADED'
    without_fix = run_tool([sys.executable, '-c', probe, ckpt,
                            'without']).stdout
    assert without_fix.startswith('FAILED UnpicklingError')
    assert 'HistoryBuffer' in without_fix
