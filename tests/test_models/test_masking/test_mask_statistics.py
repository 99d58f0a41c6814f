# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Sizes of masked pieces, and the size matching of the study's tree arms."""
import math

import pytest
import torch
import torch.nn.functional as F

from ehm_mm.models.masking import (
    BlockwiseMasking,
    ColorNoiseMasking,
    EvolvedHierarchicalMasking,
    RandomHierarchyMasking,
    ShuffledAffinityMasking,
    node_size_report,
    pixel_affinity,
    region_size,
)
from ehm_mm.models.masking.mask_statistics import component_labels

BATCH = 32
TREE_ARM = dict(grid_size=(8, 8), mask_ratio=0.75, d_max=4.,
                depth_unit='node_size')
# Tolerance of the random tree against EHM at one depth: a factor 1.5 on
# the batch means. With depth_unit='node_size' each source cuts the level
# whose mean node size is closest to 2**d (in log2); node sizes grow by a
# factor g per level (about 1.7 in random trees, 1.3-1.5 in EHM's), so
# each source lands within sqrt(g) of 2**d and two sources within about
# sqrt(1.7 * 1.5) = 1.6 of each other.
TOLERANCE = 1.5


def test_regions_on_known_masks():
    mask = torch.tensor([[1, 1, 0, 1,
                          0, 0, 0, 1,
                          1, 0, 1, 1,
                          1, 0, 0, 0]], dtype=torch.float)
    labels = component_labels(mask, (4, 4)).view(4, 4)
    assert labels.tolist() == [[0, 0, 16, 3],
                               [16, 16, 16, 3],
                               [8, 16, 3, 3],
                               [8, 16, 16, 16]]
    # regions of 2, 4 and 2 patches; the 8 visible patches are one region
    assert region_size(mask, (4, 4)).tolist() == [pytest.approx(8 / 3)]
    assert region_size(1 - mask, (4, 4)).tolist() == [8.]
    # a spiral: the longest path in a region is nearly all its patches
    spiral = torch.tensor([[1, 1, 1, 1, 1],
                           [0, 0, 0, 0, 1],
                           [1, 1, 1, 0, 1],
                           [1, 0, 0, 0, 1],
                           [1, 1, 1, 1, 1]], dtype=torch.float).view(1, 25)
    assert region_size(spiral, (5, 5)).tolist() == [17.]
    assert region_size(torch.zeros(2, 4), (2, 2)).tolist() == [0., 0.]


def _tree_reports(affinity: torch.Tensor, depth: int) -> dict:
    """Reports of EHM, shuffled attention and the random tree."""
    reports = {}
    for name, source, kwargs in (
            ('ehm', EvolvedHierarchicalMasking(**TREE_ARM),
             dict(affinity=affinity)),
            ('shuffled', ShuffledAffinityMasking(**TREE_ARM),
             dict(affinity=affinity)),
            ('random', RandomHierarchyMasking(**TREE_ARM),
             dict(batch_size=BATCH))):
        reports[name] = node_size_report(
            source, depth=[depth] * BATCH,
            generator=torch.Generator().manual_seed(1), **kwargs)
    return reports


@pytest.mark.parametrize('depth', [1, 2, 3, 4])
def test_tree_arms_are_size_matched(depth, smooth_affinity):
    reports = _tree_reports(smooth_affinity(BATCH, 8, 8), depth)
    ehm, shuffled, random = (reports[k] for k in ('ehm', 'shuffled',
                                                  'random'))
    # shuffled attention cuts EHM's trees of the same batch, permuted:
    # the level node sizes agree exactly, image for image once sorted
    assert torch.equal(shuffled['level_node_size'].sort().values,
                       ehm['level_node_size'].sort().values)
    assert float(shuffled['level_node_size'].mean()) == pytest.approx(
        float(ehm['level_node_size'].mean()), rel=1e-6)
    # the masked nodes (a draw) agree within 5 % over 32 images
    assert float(shuffled['masked_node_size'].mean()) == pytest.approx(
        float(ehm['masked_node_size'].mean()), rel=0.05)
    # the random tree within the stated tolerance, and near 2**depth
    for key in ('level_node_size', 'masked_node_size'):
        ratio = float(random[key].mean()) / float(ehm[key].mean())
        assert 1 / TOLERANCE <= ratio <= TOLERANCE, (key, ratio)
    for report in (ehm, random):
        size = float(report['level_node_size'].mean())
        assert abs(math.log2(size) - depth) <= 0.5, size


@pytest.mark.parametrize('depth', [1, 2, 3])
def test_the_tolerance_sees_a_depth_off_by_one(depth, smooth_affinity):
    # nodes of twice the size (one depth more) fall outside the tolerance
    affinity = smooth_affinity(BATCH, 8, 8)
    ehm = node_size_report(EvolvedHierarchicalMasking(**TREE_ARM), affinity,
                           depth=depth)
    random = node_size_report(RandomHierarchyMasking(**TREE_ARM),
                              depth=depth + 1, batch_size=BATCH,
                              generator=torch.Generator().manual_seed(1))
    for key in ('level_node_size', 'masked_node_size'):
        ratio = float(random[key].mean()) / float(ehm[key].mean())
        assert ratio > TOLERANCE, (key, ratio)


def test_report_of_every_source():
    gen = torch.Generator().manual_seed(0)
    images = F.avg_pool2d(torch.rand(8, 3, 64, 64, generator=gen) * 255, 9,
                          1, 4, count_include_pad=False)
    pixel = node_size_report(EvolvedHierarchicalMasking(**TREE_ARM),
                             pixel_affinity(images, 8), depth=2)
    assert pixel['level_node_size'].shape == (8, )
    assert 2 <= float(pixel['level_node_size'].mean()) <= 8
    block = node_size_report(BlockwiseMasking((8, 8), size_range='beit'),
                             batch_size=64)
    assert 5 <= float(block['masked_node_size'].mean()) <= 24
    noise = node_size_report(ColorNoiseMasking((8, 8)), batch_size=64)
    assert noise['masked_node_size'] is None
    assert noise['level_node_size'] is None
    # at ratio 0.75 the masked patches are mostly one region; the holes
    # show the pattern's scale: red (low-pass) > green > blue (high-pass)
    assert float(noise['masked_region_size'].mean()) > 24
    holes = {color: float(node_size_report(
        ColorNoiseMasking((8, 8), color=color), batch_size=256,
        generator=torch.Generator().manual_seed(0))[
            'visible_region_size'].mean())
        for color in ('red', 'green', 'blue')}
    assert holes['red'] > holes['green'] > holes['blue'] > 1
