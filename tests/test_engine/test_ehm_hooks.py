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


class _Images:
    """A training set of a few image files, as the hook reads it."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def get_data_info(self, idx):
        return dict(img_path=self.paths[idx])


class _Visualizer:

    def __init__(self):
        self.images = {}

    def add_image(self, name, image, step=0):
        self.images[(name, step)] = image


def _runner_with(model, tmp_path, size):
    from PIL import Image
    paths = []
    rng = np.random.default_rng(0)
    for i in range(2):
        path = tmp_path / f'{i}.png'
        pixels = rng.integers(0, 256, (size + 8, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return SimpleNamespace(
        model=model,
        train_dataloader=SimpleNamespace(dataset=_Images(paths)),
        visualizer=_Visualizer())


SIMMIM_PRE = dict(
    type='SelfSupDataPreprocessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)


@pytest.mark.parametrize('backbone, size, mask_patch, panel', [
    (dict(type='SimMIMSwinTransformer',
          arch=dict(embed_dims=16, depths=[1, 1, 1, 1],
                    num_heads=[1, 1, 2, 2]),
          img_size=128, stage_cfgs=dict(block_cfgs=dict(window_size=4))),
     128, 32, 128),
    (dict(type='MaskFeatViT',
          arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                    feedforward_channels=64),
          img_size=64, patch_size=8), 64, 8, 128),
], ids=['swin', 'vit'])
def test_visualization_hook_draws_ehm_simmim(tmp_path, backbone, size,
                                             mask_patch, panel):
    """The hook draws on EHMSimMIM's mask grid, for Swin and ViT."""
    import torch
    from mmpretrain.registry import MODELS
    stride = 32 if backbone['type'] == 'SimMIMSwinTransformer' else 8
    channels = 128 if backbone['type'] == 'SimMIMSwinTransformer' else 32
    torch.manual_seed(0)
    model = MODELS.build(
        dict(
            type='EHMSimMIM',
            backbone=backbone,
            neck=dict(
                type='SimMIMLinearDecoder',
                in_channels=channels,
                encoder_stride=stride),
            head=dict(
                type='SimMIMHead',
                patch_size=8 if stride == 8 else 4,
                loss=dict(
                    type='PixelReconstructionLoss', criterion='L1',
                    channel=3)),
            mask_patch_size=mask_patch,
            masking=dict(
                type='EvolvedHierarchicalMasking', mask_ratio=0.6,
                d_max=3.0),
            ema_momentum=0.5,
            data_preprocessor=SIMMIM_PRE))
    runner = _runner_with(model, tmp_path, size)
    hook = HierarchyVisualizationHook(
        num_images=2, levels=(1, 2), min_panel_size=panel)
    figure = hook.draw(runner, step=0)
    # Two rows (one per image) of 4 panels: image, levels 1 and 2, mask.
    assert figure.shape[1:] == (4 * panel + 3 * 4, 3)
    assert figure.shape[0] >= 2 * panel
    assert runner.visualizer.images[('ehm_hierarchy', 0)] is figure


def test_visualization_hook_names_a_model_without_teacher_masks(tmp_path):
    model = SimpleNamespace(backbone=SimpleNamespace())
    runner = _runner_with(model, tmp_path, 16)
    hook = HierarchyVisualizationHook(num_images=1)
    with pytest.raises(TypeError, match='teacher_affinity'):
        hook.draw(runner, step=0)
