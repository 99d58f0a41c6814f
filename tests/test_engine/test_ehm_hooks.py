# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Hierarchy drawings, the visualization hook's checks, the summary hook."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

import ehm_mm  # noqa: F401
from ehm_mm.engine.hooks import (
    EvaluationSummaryHook,
    HierarchyVisualizationHook,
)
from ehm_mm.visualization import (
    draw_mask,
    draw_partition,
    hierarchy_row,
    node_palette,
)


def test_partition_outlines_node_borders_only():
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    labels = np.array([[0, 1], [0, 1]])  # left and right half
    out = draw_partition(image, labels, alpha=0.5)
    border = (out == 255).all(axis=2)
    assert border[:, 3].all() and border.sum() == 8  # one column of edges
    left, right = node_palette(2)
    assert np.array_equal(out[0, 0], np.round(left * 0.5).astype(np.uint8))
    assert np.array_equal(out[0, 7], np.round(right * 0.5).astype(np.uint8))


def test_mask_greys_masked_patches():
    image = np.full((4, 4, 3), 200, dtype=np.uint8)
    out = draw_mask(image, np.array([[1, 0], [0, 0]]))
    assert (out[:2, :2] == 146).all()  # 0.25 * 200 + 0.75 * 128
    assert (out[2:, :] == 200).all() and (out[:2, 2:] == 200).all()


def test_row_has_one_panel_per_level_plus_two():
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    ancestors = np.stack([
        np.arange(4).reshape(2, 2),
        np.array([[0, 0], [1, 1]]),
        np.zeros((2, 2), dtype=int)
    ])
    row = hierarchy_row(
        image, ancestors, np.eye(2), depth=1, levels=(1, 2, 5), min_size=32)
    # 5 panels of 32 px with 4 gaps of 4 px (level 5 clipped to level 2).
    assert row.shape == (32, 5 * 32 + 4 * 4, 3)


@pytest.mark.parametrize('kwargs, match', [
    (dict(interval=0), 'interval'),
    (dict(num_images=0), 'num_images'),
    (dict(indices=[]), 'indices'),
    (dict(levels=[-1]), 'levels'),
])
def test_visualization_hook_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HierarchyVisualizationHook(**kwargs)


def test_summary_hook_keeps_start_and_appends_on_resume(tmp_path):
    runner = SimpleNamespace(work_dir=str(tmp_path), epoch=0, iter=0)
    hook = EvaluationSummaryHook(validate_before_train=False)
    hook.before_train(runner)
    hook.after_val_epoch(runner, {'knn/top1': np.float64(20.0)})
    runner.epoch, runner.iter = 3, 30
    hook.after_val_epoch(runner, {'knn/top1': 35.0})
    # A resumed run reads the file and keeps the first start.
    resumed = EvaluationSummaryHook()
    runner.iter = 30
    resumed.before_train(runner)
    runner.epoch, runner.iter = 6, 60
    resumed.after_val_epoch(runner, {'knn/top1': 50.0})
    with open(tmp_path / 'evaluation_summary.json') as f:
        summary = json.load(f)
    assert summary['start'] == {'knn/top1': 20.0}
    assert summary['end'] == {'knn/top1': 50.0}
    assert [h['iter'] for h in summary['history']] == [0, 30, 60]
    with pytest.raises(ValueError, match='relative'):
        EvaluationSummaryHook(out_file='/abs/summary.json')
