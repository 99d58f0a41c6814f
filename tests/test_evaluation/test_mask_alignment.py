# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
import math

import pytest
import torch

from ehm_mm.evaluation.mask_alignment import (
    mask_object_alignment,
    patch_object_ids,
)


def test_alignment_on_known_masks():
    # 2 x 2 grid, 4 patches; object 1 on patches 0, 1.
    objects = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]])
    nodes = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 2]])
    # Image 0: node {0, 1} (all object) masked.
    # Image 1: node {1, 2} (object + background) masked, patch 3 too.
    mask = torch.tensor([[True, True, False, False],
                         [False, True, True, True]])
    out = mask_object_alignment(nodes, mask, objects)
    assert out['node_in_object'].tolist() == [1.0, 0.0]
    assert out['node_in_background'].tolist() == [0.0, 0.5]
    assert out['node_mixed'].tolist() == [0.0, 0.5]
    assert out['object_coverage'].tolist() == [1.0, 0.5]
    assert out['masked_on_object'].tolist() == pytest.approx([1.0, 1 / 3])


def test_two_objects_in_one_node_are_mixed():
    objects = torch.tensor([[1, 2, 0, 0]])
    nodes = torch.tensor([[0, 0, 1, 1]])
    mask = torch.tensor([[True, True, False, False]])
    out = mask_object_alignment(nodes, mask, objects)
    assert out['node_in_object'].item() == 0.0
    assert out['node_mixed'].item() == 1.0


def test_partly_masked_node_counts_whole_and_empty_cases_are_nan():
    objects = torch.tensor([[0, 0, 0, 0]])
    nodes = torch.tensor([[0, 0, 0, 0]])
    mask = torch.tensor([[True, False, False, False]])
    out = mask_object_alignment(nodes, mask, objects)
    assert out['node_in_background'].item() == 1.0
    assert math.isnan(out['object_coverage'].item())  # no object
    none = mask_object_alignment(nodes, torch.zeros(1, 4, dtype=torch.bool),
                                 objects)
    assert math.isnan(none['masked_on_object'].item())


def test_bad_input_is_named():
    nodes = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match='must be bool'):
        mask_object_alignment(nodes, torch.zeros(1, 4), nodes)
    with pytest.raises(ValueError, match=r'\[B, N\]'):
        mask_object_alignment(nodes, torch.zeros(1, 3, dtype=torch.bool),
                              nodes)
    with pytest.raises(ValueError, match='node ids'):
        mask_object_alignment(nodes + 4, torch.zeros(1, 4, dtype=torch.bool),
                              nodes)


def test_patch_object_ids_majority():
    mask = torch.zeros(1, 4, 4, dtype=torch.long)
    mask[0, :2, :2] = 1  # patch 0 wholly object 1
    mask[0, 2, 2:] = 2  # patch 3 half object 2: background wins the tie
    mask[0, 2:, 0] = 2
    mask[0, 3, 1] = 2  # patch 2: 3 of 4 pixels object 2
    assert patch_object_ids(mask, (2, 2)).tolist() == [[1, 0, 2, 0]]
    with pytest.raises(ValueError, match='whole number'):
        patch_object_ids(mask, (3, 3))
