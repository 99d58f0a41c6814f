# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
import math

import pytest
import torch

from ehm_mm.evaluation.mask_alignment import (
    mask_level_nodes,
    mask_object_alignment,
    masking_result_alignment,
    patch_object_ids,
)
from ehm_mm.models.masking import (
    BlockwiseMasking,
    ColorNoiseMasking,
    Hierarchy,
    MaskingResult,
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


def _result(mask, depth, ancestors=None):
    """A MaskingResult with only what the alignment reads."""
    mask = torch.tensor(mask, dtype=torch.float)
    tree = None
    if ancestors is not None:
        ancestors = torch.tensor(ancestors)
        tree = Hierarchy(ancestors, torch.ones(ancestors.shape[:2],
                                               dtype=torch.long), (2, 2))
    ids = torch.zeros_like(mask, dtype=torch.long)
    return MaskingResult(mask, ids, ids[:, :1], torch.tensor(depth), tree)


def test_nodes_are_the_level_each_mask_is_cut_from():
    # Image 0 cut from level 1 (columns), image 1 from level 0 (patches).
    levels = [[0, 1, 2, 3], [0, 1, 0, 1], [0, 0, 0, 0]]
    result = _result([[1, 0, 1, 0], [1, 0, 0, 0]], [1, 0], [levels, levels])
    assert mask_level_nodes(result).tolist() == [[0, 1, 0, 1], [0, 1, 2, 3]]
    # Object 1 on the left column (patches 0 and 2).
    objects = torch.tensor([[1, 0, 1, 0], [1, 0, 1, 0]])
    out = masking_result_alignment(result, objects)
    assert out['node_in_object'].tolist() == [1.0, 1.0]
    assert out['object_coverage'].tolist() == [1.0, 0.5]
    # Without a tree (MAE's random masks) every patch is its own node.
    plain = _result([[1, 1, 0, 0]], [0])
    assert mask_level_nodes(plain).tolist() == [[0, 1, 2, 3]]
    assert masking_result_alignment(
        plain, objects[:1])['node_mixed'].tolist() == [0.0]
    with pytest.raises(ValueError, match='has 3 levels'):
        mask_level_nodes(_result([[1, 0, 0, 0]], [3], [levels]))


def test_alignment_of_content_free_sources():
    """Noise masks: patches are nodes; block masks: the block pieces."""
    objects = torch.zeros(4, 64, dtype=torch.long)
    objects[:, :16] = 1  # the top two rows of the 8 x 8 grid
    generator = torch.Generator().manual_seed(0)
    noise = ColorNoiseMasking((8, 8))(batch_size=4, generator=generator)
    out = masking_result_alignment(noise, objects)
    assert out['node_mixed'].tolist() == [0.0] * 4  # one patch, one label
    masked_top = noise.mask[:, :16].sum(1) / noise.mask.sum(1)
    assert out['masked_on_object'].tolist() == pytest.approx(
        masked_top.double().tolist())
    blocks = BlockwiseMasking((8, 8), size_range='beit')(
        batch_size=4, generator=generator)
    nodes = mask_level_nodes(blocks)
    assert torch.equal(nodes, blocks.hierarchy.ancestors[:, 1])
    shares = masking_result_alignment(blocks, objects)
    total = (shares['node_in_object'] + shares['node_in_background'] +
             shares['node_mixed'])
    assert total.tolist() == pytest.approx([1.0] * 4)
