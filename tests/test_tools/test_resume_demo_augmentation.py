# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""``--resume`` is bit-exact on the demo config, augmentation included.

The shipped demo config (random resized crops and flips in persistent
data-loader workers) on tiny data: 4 epochs straight with 2 workers must
equal 2 epochs with 2 workers, a stop, ``--resume`` and 2 epochs with 1
worker, in every weight, buffer and optimizer moment. The first half stops
through ``EarlyStoppingHook`` after the validation of epoch 2 (both runs
validate there), so that ``max_epochs``, and with it the masking schedule,
is the same in both runs.
"""
import os.path as osp
import sys

import pytest
import torch

import ehm_mm  # noqa: F401  (allow-lists mmengine classes for torch.load)

DEMO = osp.abspath(
    osp.join(
        osp.dirname(__file__), '..', '..', 'configs',
        'ehm_mae_vit-tiny_demo.py'))

# The demo config on 32 training images, batches of 8 (4 iterations per
# epoch), validated on 24 images every 2 epochs, without pictures.
SMALL_DEMO = """_base_ = '{base}'
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(data_root='{data}', num_samples=32))
val_dataloader = dict(
    batch_size=24,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root='{data}', num_samples=24))
val_evaluator = [dict(type='HierarchyIoU'), dict(type='KNNAccuracy', k=5)]
train_cfg = dict(max_epochs=4, val_interval=2)
default_hooks = dict(
    logger=dict(interval=1), checkpoint=dict(interval=2, max_keep_ckpts=2))
custom_hooks = []
"""

# Stop after the validation of epoch 2 (a threshold every score passes).
STOP_AFTER_FIRST_VAL = """_base_ = '{base}'
custom_hooks = [
    dict(type='EarlyStoppingHook', monitor='knn/top1', rule='greater',
         stopping_threshold=-1.0),
]
"""


@pytest.fixture(scope='module')
def runs(tmp_path_factory, run_tool):
    root = tmp_path_factory.mktemp('demo_resume')
    cfg = root / 'small_demo.py'
    cfg.write_text(SMALL_DEMO.format(base=DEMO, data=root / 'data'))
    stop_cfg = root / 'small_demo_stop.py'
    stop_cfg.write_text(STOP_AFTER_FIRST_VAL.format(base=cfg))
    straight, split = str(root / 'straight'), str(root / 'split')
    train = [sys.executable, 'tools/train.py']
    run_tool(train + [str(cfg), '--work-dir', straight])
    first = run_tool(train + [str(stop_cfg), '--work-dir', split])
    second = run_tool(train + [
        str(cfg), '--work-dir', split, '--resume', '--cfg-options',
        'train_dataloader.num_workers=1'
    ])
    return straight, split, first.stdout + first.stderr, (second.stdout +
                                                          second.stderr)


def test_demo_resume_is_bit_exact_with_augmentation(runs):
    straight, split, first_log, second_log = runs
    assert 'Epoch(train) [3]' not in first_log
    assert 'resumed epoch: 2, iter: 8' in second_log
    assert 'Epoch(train) [3][1/4]' in second_log
    a = torch.load(osp.join(straight, 'epoch_4.pth'), map_location='cpu')
    b = torch.load(osp.join(split, 'epoch_4.pth'), map_location='cpu')
    assert a['meta']['iter'] == b['meta']['iter'] == 16
    assert set(a['state_dict']) == set(b['state_dict'])
    differ = [
        name for name, value in a['state_dict'].items()
        if not torch.equal(value, b['state_dict'][name])
    ]
    assert not differ, f'{len(differ)} tensors differ, e.g. {differ[:5]}'
    for pa, pb in zip(a['optimizer']['state'].values(),
                      b['optimizer']['state'].values()):
        for key in pa:
            assert torch.equal(torch.as_tensor(pa[key]),
                               torch.as_tensor(pb[key])), key
