# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""StageMetricsHook: every validation's figures in one file, the final one
marked, and a training resumed at its end validated."""
import json
import os.path as osp
import uuid

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.runner import Runner
from runner_utils import restoring_mmengine_globals

from ehm_mm.engine.hooks import StageMetricsHook
from ehm_mm.engine.hooks.stage_metrics_hook import scalar_value


class _Toy(BaseModel):

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(torch.stack(inputs))
        if mode == 'loss':
            return dict(loss=(out**2).mean())
        return list(out)


class _Seen(BaseMetric):
    """Counts the validated samples; also reports a non-scalar."""

    def process(self, data_batch, data_samples) -> None:
        self.results.append(len(data_samples))

    def compute_metrics(self, results) -> dict:
        return dict(seen=sum(results), matrix=torch.eye(2))


def _runner(work_dir: str, resume: bool) -> Runner:
    data = [dict(inputs=torch.full((2, ), float(i))) for i in range(4)]
    loader = dict(dataset=data, batch_size=2, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='pseudo_collate'))
    return Runner(
        model=_Toy(), work_dir=work_dir, train_dataloader=loader,
        train_cfg=dict(by_epoch=True, max_epochs=2, val_interval=1),
        val_dataloader=loader, val_cfg=dict(),
        val_evaluator=dict(type=_Seen),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=1)),
        custom_hooks=[StageMetricsHook()], resume=resume,
        experiment_name=f'stage_metrics_{uuid.uuid4().hex}')


def _records(work_dir: str) -> list:
    with open(osp.join(work_dir, 'stage_metrics.json')) as f:
        return json.load(f)['records']


def test_records_every_validation_and_marks_the_final(tmp_path):
    work_dir = str(tmp_path)
    with restoring_mmengine_globals():
        _runner(work_dir, resume=False).train()
    records = _records(work_dir)
    assert [(r['mode'], r['epoch'], r['final']) for r in records] == [
        ('val', 1, False), ('val', 2, True)
    ]
    assert records[-1]['metrics'] == {'seen': 4.0}
    assert records[-1]['non_scalar'] == ['matrix']
    # A job killed after its final checkpoint: the resumed training has
    # nothing left to train and validates the final weights.
    with restoring_mmengine_globals():
        _runner(work_dir, resume=True).train()
    records = _records(work_dir)
    assert [(r['mode'], r['iter'], r['final']) for r in records] == [
        ('val', 4, True)
    ]


@pytest.mark.parametrize('value, expected', [
    (3, 3.0), (2.5, 2.5), (np.float32(1.5), 1.5), (torch.tensor(2.0), 2.0),
    (torch.tensor([4.0]), 4.0), (float('nan'), float('nan')),
    (True, None), ('52', None), (torch.eye(2), None),
    (np.array([1.0, 2.0]), None),
])
def test_scalar_value(value, expected):
    result = scalar_value(value)
    if expected is None:
        assert result is None
    elif expected != expected:  # NaN is kept, for the reader to refuse
        assert result != result
    else:
        assert result == expected


def test_out_file_is_a_name_in_the_work_dir():
    with pytest.raises(ValueError, match='file name in the work dir'):
        StageMetricsHook(out_file='/tmp/x.json')
