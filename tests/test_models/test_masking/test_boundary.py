# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Tests of ``boundary='subtree'``: the split node follows its subtree."""
import pytest
import torch
from mmpretrain.registry import MODELS

from ehm_mm.models.masking.evolved_masking import subtree_order


def _build(grid=(14, 14), **kwargs):
    cfg = dict(type='EvolvedHierarchicalMasking', grid_size=grid,
               mask_ratio=0.75, d_min=0.0, d_max=5.0)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def _split(mask: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
    """Ids of the nodes that are partly masked (one image)."""
    num = int(nodes.max()) + 1
    share = torch.zeros(num).index_add_(0, nodes, mask)
    sizes = torch.bincount(nodes, minlength=num).float()
    return ((share > 0) & (share < sizes)).nonzero().flatten()


def _split_descendants(out, b: int) -> list:
    """Per level below the mask's, the split descendants of image b's one
    split node (the masked part is whole descendants where all are 0/1)."""
    tree, level = out.hierarchy, int(out.depth[b])
    split = _split(out.mask[b], tree.level(level)[b])
    assert len(split) <= 1
    if len(split) == 0:
        return []
    inside = tree.level(level)[b] == split[0]
    return [
        len(_split(out.mask[b][inside], tree.level(lvl)[b][inside]))
        for lvl in range(level)
    ]


@pytest.mark.parametrize('depth_unit', ['level', 'node_size'])
def test_masked_part_of_the_boundary_node_is_whole_descendants(
        depth_unit, smooth_affinity):
    affinity = smooth_affinity(24, 14, 14, seed=4)
    depth = [2, 3, 4, 5] * 6
    subtree = _build(boundary='subtree', depth_unit=depth_unit)
    random = _build(boundary='random', depth_unit=depth_unit)
    out = subtree(affinity, depth=depth,
                  generator=torch.Generator().manual_seed(0))
    ref = random(affinity, depth=depth,
                 generator=torch.Generator().manual_seed(0))
    assert bool((out.mask.sum(1) == 147).all())
    violations = 0
    for b in range(24):
        counts = _split_descendants(out, b)
        assert all(c <= 1 for c in counts), (b, counts)
        violations += any(c > 1 for c in _split_descendants(ref, b))
        # same nodes wholly masked, same boundary node, same share of it
        assert torch.equal(out.depth, ref.depth)
        nodes = out.hierarchy.level(int(out.depth[b]))[b]
        shares = [torch.zeros(196).index_add_(0, nodes, m[b])
                  for m in (out.mask, ref.mask)]
        assert torch.equal(shares[0], shares[1])
    # random picks inside the boundary node are not whole descendants
    assert violations > 0
    assert torch.equal(out.node_size, ref.node_size)


def test_shallow_masks_are_unchanged(smooth_affinity):
    affinity = smooth_affinity(6, 8, 8, seed=1)
    for depth in ([0] * 6, [1] * 6, [0, 1, 0, 1, 1, 0]):
        a = _build((8, 8), d_max=4.0, boundary='subtree')(
            affinity, depth=depth, generator=torch.Generator().manual_seed(3))
        b = _build((8, 8), d_max=4.0)(
            affinity, depth=depth, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a.mask, b.mask)
        assert torch.equal(a.ids_restore, b.ids_restore)


def _binary_tree(batch: int) -> torch.Tensor:
    """A perfect binary tree over 8 patches in a row, ``[B, 4, 8]``."""
    index = torch.arange(8)
    levels = [index, index // 2, index // 4, index * 0]
    return torch.stack(levels)[None].expand(batch, 4, 8).clone()


def test_subtree_order_is_lexicographic_with_random_children():
    batch = 4000
    ancestors = _binary_tree(batch)
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(batch, 8, generator=gen)
    order = subtree_order(ancestors, torch.full((batch, ), 3), noise, gen)
    assert torch.equal(order.sort(1).values,
                       torch.arange(8).expand(batch, 8))
    # every node below the cut occupies consecutive places
    for lvl in (1, 2):
        nodes = ancestors[:, lvl]
        for node in range(8 >> lvl):
            places = order[nodes == node].view(batch, -1)
            span = places.max(1).values - places.min(1).values
            assert bool((span == places.shape[1] - 1).all()), (lvl, node)
    # children order: fair coins, independent across levels
    left2 = (order[:, 0] < order[:, 4]).float()  # level-2 children of root
    left1 = (order[:, 0] < order[:, 2]).float()  # level-1 children
    left0 = (order[:, 0] < order[:, 1]).float()  # patches
    for coin in (left2, left1, left0):
        assert abs(coin.mean().item() - 0.5) < 0.04
    assert abs((left2 * left1).mean().item() - 0.25) < 0.04
    assert abs((left1 * left0).mean().item() - 0.25) < 0.04
    # at level 1 only the patches are ordered below the node: u_i decides
    order1 = subtree_order(ancestors, torch.full((batch, ), 1), noise,
                           torch.Generator().manual_seed(1))
    assert torch.equal(order1, noise.argsort(1).argsort(1))
