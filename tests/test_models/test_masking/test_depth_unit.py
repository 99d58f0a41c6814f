# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Tests of ``depth_unit='node_size'`` and the masked-node size."""
import math
import random

import pytest
import torch
from mmpretrain.registry import MODELS

from ehm_mm import EvolvedHierarchicalMasking
from ehm_mm.models.masking.evolved_masking import (
    level_by_node_size,
    masked_node_size,
)


def _build(grid=(8, 8), **kwargs) -> EvolvedHierarchicalMasking:
    cfg = dict(type='EvolvedHierarchicalMasking', grid_size=grid,
               mask_ratio=0.75, d_min=0.0, d_max=4.0,
               depth_unit='node_size')
    cfg.update(kwargs)
    return MODELS.build(cfg)


def _closest_level(counts, num, k) -> int:
    """Plain-Python reference of :func:`level_by_node_size`."""
    dist = [abs(math.log2(num / c) - k) for c in counts]
    return dist.index(min(dist))


def _split_nodes(mask: torch.Tensor, nodes: torch.Tensor) -> int:
    num = nodes.numel()
    share = torch.zeros(num).index_add_(0, nodes, mask)
    sizes = torch.bincount(nodes, minlength=num).float()
    return int(((share > 0) & (share < sizes)).sum())


def test_level_by_node_size_picks_the_closest_mean_size():
    # N = 64; mean sizes 1, 2, 4, 8, 32, 64 (and repeats of the top)
    num_nodes = torch.tensor([[64, 32, 16, 8, 2, 1, 1],
                              [64, 60, 50, 40, 30, 20, 10]])
    for k in range(7):
        level = level_by_node_size(num_nodes, 64, torch.full((2, ), k))
        assert level.tolist() == [
            _closest_level(c, 64, k) for c in num_nodes.tolist()]
    k = torch.tensor([4, 3])
    # size 16: 8 (level 3) and 32 (level 4) are equally far as ratios, the
    # lower level wins; image 1 only reaches 6.4 (its top level)
    assert level_by_node_size(num_nodes, 64, k).tolist() == [3, 6]
    # the top is never passed over for its repeats
    assert level_by_node_size(num_nodes, 64,
                              torch.tensor([6, 0])).tolist() == [5, 0]


def test_masked_node_size_counts_whole_touched_nodes():
    nodes = torch.tensor([[0, 0, 0, 1, 1, 2], [0, 1, 2, 3, 4, 5]])
    mask = torch.tensor([[1., 1., 0., 1., 1., 0.], [1., 0., 1., 0., 0., 0.]])
    # image 0 touches the 3-patch node (split) and the 2-patch node
    assert masked_node_size(nodes, mask).tolist() == [2.5, 1.0]
    assert masked_node_size(nodes, torch.zeros(2, 6)).tolist() == [0., 0.]


@pytest.mark.parametrize('k', [1, 2, 3, 4])
def test_node_size_unit_masks_the_level_closest_to_2_pow_d(
        k, smooth_affinity):
    masking = _build(levels_per_octave=3.0)
    affinity = smooth_affinity(8, 8, 8, seed=k)
    out = masking(affinity, depth=k,
                  generator=torch.Generator().manual_seed(k))
    tree = out.hierarchy
    assert tree.num_levels == 3 * k + 1  # ceil(3 * k) levels built
    counts = tree.num_nodes.tolist()
    assert out.depth.tolist() == [
        _closest_level(c, 64, k) for c in counts]
    assert bool((out.mask.sum(1) == 48).all())
    sizes = tree.node_sizes()
    for b in range(8):
        level = int(out.depth[b])
        nodes = tree.level(level)[b]
        assert _split_nodes(out.mask[b], nodes) <= 1
        touched = nodes[out.mask[b] > 0].unique()
        assert float(out.node_size[b]) == pytest.approx(
            sizes[b, level, touched].float().mean().item())


def test_node_size_depth_zero_is_mae_random_masking(smooth_affinity):
    affinity = smooth_affinity(4, 8, 8)
    level = _build(depth_unit='level')
    size = _build()
    for depth in (0, [0, 0, 0, 0]):
        a = level(affinity, depth=depth,
                  generator=torch.Generator().manual_seed(2))
        b = size(affinity, depth=depth,
                 generator=torch.Generator().manual_seed(2))
        assert b.depth.tolist() == [0] * 4
        assert torch.equal(a.mask, b.mask)
        assert torch.equal(a.ids_restore, b.ids_restore)
        assert b.node_size.tolist() == [1.0] * 4
    assert size(None, depth=[0, 0]).hierarchy.num_levels == 1


def test_node_size_unit_follows_the_tree_not_the_level(quadrant_affinity):
    """A slow-merging tree needs more levels for the same node size."""
    flat = torch.ones(2, 64, 64)  # ties only: slow, wavefront-like merging
    sharp, _ = quadrant_affinity(2, size=8, noise=0.05)
    masking = _build(levels_per_octave=3.0)
    size_flat = masking(flat, depth=3,
                        generator=torch.Generator().manual_seed(0))
    size_sharp = masking(sharp, depth=3,
                         generator=torch.Generator().manual_seed(0))
    for out in (size_flat, size_sharp):
        mean = 64 / out.hierarchy.num_nodes.float()
        chosen = mean.gather(1, out.depth[:, None]).squeeze(1)
        # closer to 8 patches than any other level, as a ratio
        dist = (mean.log2() - 3).abs()
        assert torch.equal((chosen.log2() - 3).abs(), dist.min(1).values)
    level = _build(depth_unit='level', levels_per_octave=3.0)
    assert level(flat, depth=3).depth.tolist() == [3, 3]
    # the flat trees' level 3 nodes are smaller than the quadrant trees'
    flat_sizes = 64 / size_flat.hierarchy.num_nodes[:, 3].float()
    sharp_sizes = 64 / size_sharp.hierarchy.num_nodes[:, 3].float()
    assert bool((flat_sizes < sharp_sizes).all())
    assert bool((size_flat.depth > 3).all())


def test_stochastic_rounding_keeps_its_meaning(smooth_affinity):
    """d = 2.5: half the images target 4 patches, half 8."""
    masking = _build(d_min=1.0, d_max=4.0, levels_per_octave=2.0)
    affinity = smooth_affinity(32, 8, 8, seed=3)
    out = masking(affinity, progress=0.5,
                  generator=torch.Generator().manual_seed(0))
    # device draws: the levels are those of k = 2 or k = 3, built 6 deep
    assert out.hierarchy.num_levels == 7
    counts = out.hierarchy.num_nodes.tolist()
    for b, level in enumerate(out.depth.tolist()):
        assert level in (_closest_level(counts[b], 64, 2),
                         _closest_level(counts[b], 64, 3))
    # host draws (the training step): one depth per image, k in {2, 3}
    depth = masking.draw_depths(0.5, 32, random.Random(0))
    assert set(depth) == {2, 3}
    out = masking(affinity, depth=depth,
                  generator=torch.Generator().manual_seed(0))
    counts = out.hierarchy.num_nodes.tolist()
    assert out.depth.tolist() == [
        _closest_level(c, 64, k) for c, k in zip(counts, depth)]
    # larger targets never pick smaller mean sizes
    small = masking(affinity, depth=2).depth
    large = masking(affinity, depth=3).depth
    assert bool((large >= small).all())


def test_levels_built_follow_levels_per_octave(smooth_affinity):
    affinity = smooth_affinity(2, 8, 8)
    for lpo, k, levels in ((1.0, 3, 3), (2.0, 3, 6), (1.5, 3, 5),
                           (3.0, 4, 12), (4.0, 4, 12)):  # cap: max_levels
        out = _build(levels_per_octave=lpo)(affinity, depth=k)
        assert out.hierarchy.num_levels == levels + 1, (lpo, k)
    out = _build(levels_per_octave=4.0,
                 hierarchy_cfg=dict(max_levels=5))(affinity, depth=4)
    assert out.hierarchy.num_levels == 6
    # a depth tensor builds the whole trees
    out = _build()(affinity, depth=torch.tensor([1, 4]))
    assert bool((out.hierarchy.num_nodes[:, -1] == 1).all())


def test_d_max_is_checked_against_the_grid_in_both_units():
    # 8 x 8: nodes of at most 64 = 2**6 patches; level 6 is guaranteed
    _build(d_max=6.0)
    _build(d_max=6.0, depth_unit='level')
    with pytest.raises(ValueError, match=r"d_max=6.5 reaches depth 7.*128 "
                       r"patches.*node_size.*limit depth 6.*2\*\*d <= 64"):
        _build(d_max=6.5)
    # 14 x 14: 7 in node-size units (128 <= 196), 8 levels
    _build((14, 14), d_max=7.0)
    _build((14, 14), d_max=8.0, depth_unit='level')
    with pytest.raises(ValueError, match='limit depth 7'):
        _build((14, 14), d_max=8.0)
    with pytest.raises(ValueError, match='d_min=7.5'):
        _build(d_min=7.5, d_max=1.0)
    with pytest.raises(ValueError, match='max_levels'):
        _build(d_max=4.0, hierarchy_cfg=dict(max_levels=3))


@pytest.mark.parametrize('kwargs, match', [
    (dict(depth_unit='levels'), 'depth_unit'),
    (dict(levels_per_octave=0.5), 'levels_per_octave'),
    (dict(levels_per_octave=float('inf')), 'levels_per_octave'),
    (dict(levels_per_octave=True), 'levels_per_octave'),
    (dict(boundary='tree'), 'boundary'),
])
def test_bad_options_fail_at_build_time(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _build(**kwargs)


def test_level_unit_is_unchanged_and_reports_node_sizes(smooth_affinity):
    masking = _build(depth_unit='level')
    affinity = smooth_affinity(4, 8, 8)
    out = masking(affinity, depth=[1, 2, 3, 4],
                  generator=torch.Generator().manual_seed(0))
    assert out.depth.tolist() == [1, 2, 3, 4]
    assert out.hierarchy.num_levels == 5
    assert bool((out.node_size >= 1).all())
    assert bool((out.node_size <= 2.0**out.depth.float()).all())
    assert 'depth_unit=' in repr(masking)
