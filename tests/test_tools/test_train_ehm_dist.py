# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""tools/dist_train.sh: 2 CPU processes (gloo) train the tiny EHM-MAE."""
import os.path as osp
import socket
import sys

import torch

import ehm_mm  # noqa: F401  (allow-lists mmengine classes for torch.load)

TINY = osp.join('tests', 'data', 'configs', 'ehm_mae_tiny_cpu.py')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_dist_train_two_cpu_processes(tmp_path, run_tool):
    data, work_dir = str(tmp_path / 'data'), str(tmp_path / 'work')
    proc = run_tool(
        [
            'bash', 'tools/dist_train.sh', TINY, '2', '--work-dir', work_dir,
            '--cfg-options', f'train_dataloader.dataset.data_root={data}',
            f'val_dataloader.dataset.data_root={data}',
            'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
            'default_hooks.checkpoint.interval=4'
        ],
        env=dict(PORT=str(_free_port()), PYTHON=sys.executable))
    log = proc.stdout + proc.stderr
    assert 'Distributed training: True' in log
    assert 'Iter(train) [4/4]' in log
    ckpt = torch.load(osp.join(work_dir, 'iter_4.pth'), map_location='cpu')
    state = ckpt['state_dict']
    assert int(state['teacher.steps']) == 4
    assert any(k.startswith('teacher.module.layers.') for k in state)
    assert not any(k.startswith('module.') for k in state)
    # Validation gathered both ranks' halves of the 24 val images.
    assert 'knn/top1' in log and 'hierarchy/best_iou' in log
