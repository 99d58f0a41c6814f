# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Resume is bit-exact: 8 iterations straight == 4, stop, --resume, 4 more.

Both runs go through ``tools/train.py`` with the tiny EHM-MAE config and
``randomness.deterministic=True``. The masks draw from a generator seeded
by (seed, rank, iteration), and the pipeline has no random augmentation, so
the resumed run must end with exactly the same student, decoder and EMA
teacher (and optimizer state) as the uninterrupted one.
"""
import os.path as osp
import sys

import pytest
import torch

import ehm_mm  # noqa: F401  (allow-lists mmengine classes for torch.load)

TINY = osp.abspath(
    osp.join(
        osp.dirname(__file__), '..', 'data', 'configs',
        'ehm_mae_tiny_cpu.py'))

# Stop after the validation at iteration 4 (EarlyStoppingHook with a
# threshold every score passes); nothing in it touches the training state.
STOP_AT_FIRST_VAL = """_base_ = '{base}'
custom_hooks = [
    dict(type='EvaluationSummaryHook', validate_before_train=False),
    dict(type='EarlyStoppingHook', monitor='knn/top1', rule='greater',
         stopping_threshold=-1.0),
]
"""


@pytest.fixture(scope='module')
def runs(tmp_path_factory, run_tool):
    root = tmp_path_factory.mktemp('ehm_resume')
    data = str(root / 'data')
    options = [
        '--cfg-options', f'train_dataloader.dataset.data_root={data}',
        f'val_dataloader.dataset.data_root={data}', 'train_cfg.max_iters=8',
        'train_cfg.val_interval=4', 'default_hooks.checkpoint.interval=4'
    ]
    straight, split = str(root / 'straight'), str(root / 'split')
    logs = {}
    proc = run_tool([
        sys.executable, 'tools/train.py', TINY, '--work-dir', straight,
        *options
    ])
    logs['straight'] = proc.stdout + proc.stderr
    stop_cfg = root / 'stop_at_first_val.py'
    stop_cfg.write_text(STOP_AT_FIRST_VAL.format(base=TINY))
    proc = run_tool([
        sys.executable, 'tools/train.py',
        str(stop_cfg), '--work-dir', split, *options
    ])
    logs['first_half'] = proc.stdout + proc.stderr
    logs['stopped_files'] = sorted(
        f for f in ('iter_4.pth', 'iter_8.pth')
        if osp.exists(osp.join(split, f)))
    proc = run_tool([
        sys.executable, 'tools/train.py', TINY, '--work-dir', split,
        '--resume', *options
    ])
    logs['second_half'] = proc.stdout + proc.stderr
    return straight, split, logs


def _state(path: str) -> dict:
    return torch.load(path, map_location='cpu')


def test_the_split_run_really_stopped_and_resumed(runs):
    _, _, logs = runs
    assert logs['stopped_files'] == ['iter_4.pth']
    assert 'Iter(train) [5/8]' not in logs['first_half']
    assert 'resumed epoch: 0, iter: 4' in logs['second_half']
    assert 'Iter(train) [5/8]' in logs['second_half']


def test_resume_is_bit_exact(runs):
    straight, split, _ = runs
    a = _state(osp.join(straight, 'iter_8.pth'))
    b = _state(osp.join(split, 'iter_8.pth'))
    assert set(a['state_dict']) == set(b['state_dict'])
    assert int(a['state_dict']['teacher.steps']) == 8
    for name, value in a['state_dict'].items():
        assert torch.equal(value, b['state_dict'][name]), name
    # The optimizer moments match too.
    for pa, pb in zip(a['optimizer']['state'].values(),
                      b['optimizer']['state'].values()):
        for key in pa:
            assert torch.equal(torch.as_tensor(pa[key]),
                               torch.as_tensor(pb[key])), key
    # And the run did move: the teacher is not its first copy any more.
    first = _state(osp.join(split, 'iter_4.pth'))['state_dict']
    qkv = 'teacher.module.layers.0.attn.qkv.weight'
    assert not torch.equal(first[qkv], a['state_dict'][qkv])
