# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""HierarchyIoU and best_node_iou on hand-made hierarchies."""
import numpy as np
import pytest
import torch
from mmpretrain.registry import METRICS

import ehm_mm  # noqa: F401
from ehm_mm.evaluation.metrics import HierarchyIoU
from ehm_mm.evaluation.metrics.hierarchy_iou import best_node_iou

# 2 x 2 patch grid, patches numbered 0 1 / 2 3.
COLUMNS = torch.tensor([[[0, 1], [2, 3]],  # leaves
                        [[0, 1], [0, 1]],  # left column, right column
                        [[0, 0], [0, 0]]])  # root
ROWS = torch.tensor([[[0, 1], [2, 3]], [[0, 0], [1, 1]], [[0, 0], [0, 0]]])


def _left_half(size: int = 4) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.uint8)
    mask[:, :size // 2] = 1
    return mask


def test_node_matching_the_object_scores_one():
    assert float(best_node_iou(COLUMNS, _left_half())) == 1.0


def test_best_node_over_levels_by_hand():
    # Rows cannot isolate the left half: a patch gives 4 / 8, a row
    # 4 / 12, the root 8 / 16, so the best is 0.5.
    assert float(best_node_iou(ROWS, _left_half())) == pytest.approx(0.5)


def test_partial_patch_coverage_uses_pixels():
    # Object: the top-left 3 x 3 pixels of a 4 x 4 image (patch size 2).
    mask = torch.zeros(4, 4)
    mask[:3, :3] = 1
    # Patch 0 holds 4 object pixels, patches 1 and 2 hold 2, patch 3 one.
    # Left column {0, 2}: inter 6, union 8 + 9 - 6 = 11.
    # Root: 9 / 16. Patch 0: 4 / 9.
    assert float(best_node_iou(COLUMNS, mask)) == pytest.approx(9 / 16)
    assert float(best_node_iou(COLUMNS[:2], mask)) == pytest.approx(6 / 11)


def test_empty_mask_scores_zero_and_bad_input_fails():
    assert float(best_node_iou(COLUMNS, torch.zeros(4, 4))) == 0.0
    with pytest.raises(ValueError, match='whole number of patches'):
        best_node_iou(COLUMNS, torch.zeros(5, 4))
    with pytest.raises(ValueError, match='ancestor ids'):
        best_node_iou(COLUMNS + 4, torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r'\[L, h, w\]'):
        best_node_iou(COLUMNS[0], torch.zeros(4, 4))


def test_metric_averages_in_percent():
    metric = METRICS.build(dict(type='HierarchyIoU'))
    assert isinstance(metric, HierarchyIoU)
    samples = [
        dict(hierarchy_ancestors=COLUMNS, gt_object_mask=_left_half()),
        dict(
            hierarchy_ancestors=ROWS.numpy(),
            gt_object_mask=_left_half().numpy()),
    ]
    metric.process({}, samples)
    assert metric.evaluate(2) == {
        'hierarchy/best_iou': pytest.approx(75.0)
    }


def test_metric_names_a_missing_field():
    metric = HierarchyIoU()
    with pytest.raises(KeyError, match='gt_object_mask'):
        metric.process({}, [dict(hierarchy_ancestors=COLUMNS)])


def test_random_trees_score_below_planted_tree():
    """On an 8 x 8 grid, a tree that merges the object first beats rows."""
    rng = np.random.default_rng(0)
    obj = torch.zeros(16, 16)
    obj[4:12, 2:10] = 1  # patches rows 2..5, cols 1..4 (2 px patches)
    index = torch.arange(64).view(8, 8)
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[2:6, 1:5] = True
    planted = torch.stack([index, torch.where(inside, 17, index)])
    shuffled = torch.stack(
        [index, torch.as_tensor(rng.permutation(64)).view(8, 8) // 4])
    assert float(best_node_iou(planted, obj)) == 1.0
    assert float(best_node_iou(shuffled, obj)) < 0.5


def _teacher_metric():
    return METRICS.build(
        dict(type='HierarchyIoU', ancestors_key='teacher_hierarchy_ancestors',
             fallback_key='hierarchy_ancestors', prefix='teacher_hierarchy'))


def test_teacher_tree_metric_scores_its_own_field():
    """With both trees written, the teacher-tree metric scores the teacher
    tree, not the one that made the masks."""
    metric = _teacher_metric()
    metric.process({}, [
        dict(hierarchy_ancestors=ROWS, teacher_hierarchy_ancestors=COLUMNS,
             gt_object_mask=_left_half())
    ])
    assert metric.evaluate(1) == {
        'teacher_hierarchy/best_iou': pytest.approx(100.0)
    }


def test_fallback_scores_the_only_tree():
    """A model whose masks come from the image's own tree writes one tree:
    the fallback scores it (both trees are the same)."""
    metric = _teacher_metric()
    metric.process({}, [
        dict(hierarchy_ancestors=ROWS, gt_object_mask=_left_half())
    ])
    assert metric.evaluate(1) == {
        'teacher_hierarchy/best_iou': pytest.approx(50.0)
    }


def test_fallback_refuses_a_mix_and_no_fallback_names_the_field():
    metric = _teacher_metric()
    both = dict(hierarchy_ancestors=ROWS, teacher_hierarchy_ancestors=COLUMNS,
                gt_object_mask=_left_half())
    one = dict(hierarchy_ancestors=ROWS, gt_object_mask=_left_half())
    with pytest.raises(ValueError, match='one run must score one tree'):
        metric.process({}, [both, one])
    strict = HierarchyIoU(ancestors_key='teacher_hierarchy_ancestors')
    with pytest.raises(KeyError, match='teacher_hierarchy_ancestors'):
        strict.process({}, [one])
