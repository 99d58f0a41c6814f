# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""tools/dist_train.sh: 2 CPU ranks, each with a persistent worker making
EHM masks in the pipeline (batched in the collate function, in the worker);
every rank's hook feeds its own workers."""
import os.path as osp
import socket
import sys

import numpy as np
from PIL import Image

CONFIG = """_base_ = '{repo}/configs/simmim/simmim_swin-base-w6_ehm-pix_8xb256-amp-coslr-100e_in1k-192px.py'
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=16, depths=[1, 1, 1, 1],
                  num_heads=[1, 1, 2, 2]),
        img_size=64, stage_cfgs=dict(block_cfgs=dict(window_size=2))),
    neck=dict(in_channels=128))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.67, 1.0)),
    dict(type='EvolvedHierarchicalMaskGenerator', input_size=64,
         mask_patch_size=16, model_patch_size=4, mask_ratio=0.6, d_max=2.0,
         progress_timeout=120, batched=True),
    dict(type='PackInputs', algorithm_keys=['mask_request']),
]
train_dataloader = dict(
    _delete_=True, batch_size=2, num_workers=1, persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    collate_fn=dict(type='evolved_mask_collate'),
    dataset=dict(type='CustomDataset', data_root='{data}', with_label=False,
                 pipeline=train_pipeline))
optim_wrapper = dict(type='NonFiniteSkipOptimWrapper')
param_scheduler = []
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=4)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(by_epoch=False, interval=4))
log_processor = dict(by_epoch=False)
"""  # noqa: E501


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_dist_train_two_ranks_with_pipeline_masks(tmp_path, run_tool,
                                                  repo_root):
    data = tmp_path / 'data'
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (72, 80, 3), dtype=np.uint8)
                        ).save(data / f'img_{i}.png')
    config = tmp_path / 'simmim_pix_tiny.py'
    config.write_text(CONFIG.format(repo=repo_root, data=data))
    work_dir = str(tmp_path / 'work')
    proc = run_tool(
        ['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir',
         work_dir],
        env=dict(PORT=str(_free_port()), PYTHON=sys.executable))
    log = proc.stdout + proc.stderr
    assert 'Distributed training: True' in log
    assert 'Iter(train) [4/4]' in log
    assert osp.isfile(osp.join(work_dir, 'iter_4.pth'))
