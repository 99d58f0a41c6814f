# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""End to end through mmengine's Runner: a tiny EHM-MAE trains on CPU."""
import json
import os.path as osp

import numpy as np
import pytest
import torch
from runner_utils import runner_config, train_in_process

import ehm_mm  # noqa: F401

TINY = osp.join(
    osp.dirname(__file__), '..', 'data', 'configs', 'ehm_mae_tiny_cpu.py')


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Train the tiny config for 24 iterations in this process."""
    root = tmp_path_factory.mktemp('ehm_e2e')
    return train_in_process(runner_config(TINY, str(root), 'ehm_e2e'))


def test_loss_falls_on_a_fixed_batch(trained):
    losses = trained.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 24
    assert np.isfinite(losses).all()
    assert losses[-6:].mean() < 0.8 * losses[:6].mean(), losses


def test_masks_come_from_the_hierarchy(trained):
    depth = trained.message_hub.get_scalar('train/mask_depth').data[0]
    # Progress 0: depth d_min = 0 (MAE random masking); d(t) = 3 t later.
    assert depth[0] == 0.0
    assert (depth[12:] > 0).all(), depth
    assert depth[-4:].mean() > depth[4:8].mean(), depth


def test_checkpoint_holds_the_teacher(trained):
    work_dir = trained.work_dir
    ckpt = torch.load(
        osp.join(work_dir, 'iter_24.pth'), map_location='cpu')
    state = ckpt['state_dict']
    model = trained.model
    assert int(state['teacher.steps']) == 24
    teacher = {
        k[len('teacher.module.'):]: v
        for k, v in state.items() if k.startswith('teacher.module.')
    }
    student = {
        k[len('backbone.'):]: v
        for k, v in state.items() if k.startswith('backbone.')
    }
    assert set(teacher) == set(student) == set(
        model.backbone.state_dict())
    for name, value in model.teacher.module.state_dict().items():
        assert torch.equal(teacher[name], value)
    # The EMA teacher lags the student: different, but not far off.
    qkv = 'layers.0.attn.qkv.weight'
    assert not torch.equal(teacher[qkv], student[qkv])


def test_pictures_and_summary_are_written(trained):
    work_dir = trained.work_dir
    vis_dir = osp.join(trained.log_dir, 'vis_data', 'vis_image')
    for step in (0, 12, 24):
        assert osp.isfile(osp.join(vis_dir, f'ehm_hierarchy_{step}.png'))
    with open(osp.join(work_dir, 'evaluation_summary.json')) as f:
        summary = json.load(f)
    assert [h['iter'] for h in summary['history']] == [0, 12, 24]
    for key in ('hierarchy/best_iou', 'knn/top1'):
        assert 0.0 <= summary['start'][key] <= 100.0
        assert 0.0 <= summary['end'][key] <= 100.0
