# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The study's control mask generators: block-wise and random hierarchy."""
import pytest
import torch
from mmpretrain.registry import MODELS

from ehm_mm.models.masking import (
    BlockwiseMasking,
    MaskingResult,
    RandomHierarchyMasking,
    beit_block_patches,
)
from ehm_mm.models.masking.control_masking import compact_node_ids


def _split_nodes(mask: torch.Tensor, nodes: torch.Tensor) -> int:
    """How many nodes are partly masked."""
    num = nodes.numel()
    share = torch.zeros(num).index_add_(0, nodes, mask)
    sizes = torch.bincount(nodes, minlength=num).float()
    return int(((share > 0) & (share < sizes)).sum())


def _check_mae_conventions(out: MaskingResult, batch: int, num: int,
                           num_mask: int) -> None:
    assert out.mask.shape == (batch, num)
    assert bool((out.mask.sum(1) == num_mask).all())  # exact ratio
    assert out.ids_keep.shape == (batch, num - num_mask)
    # ids_keep are exactly the visible patches; ids_restore inverts them
    visible = torch.zeros(batch, num).scatter_(1, out.ids_keep, 1.0)
    assert torch.equal(visible, 1 - out.mask)
    ids_shuffle = torch.argsort(out.ids_restore, dim=1)
    assert torch.equal(ids_shuffle[:, :num - num_mask], out.ids_keep)


@pytest.mark.parametrize('grid,ratio', [((8, 8), 0.75), ((14, 14), 0.75),
                                        ((5, 7), 0.4), ((2, 3), 0.5)])
def test_blockwise_exact_ratio_whole_blocks(grid, ratio):
    masking = MODELS.build(
        dict(type='BlockwiseMasking', grid_size=grid, mask_ratio=ratio))
    assert isinstance(masking, BlockwiseMasking)
    assert masking.requires_affinity is False
    assert masking.draw_depths(0.5, 3, None) == [0, 0, 0]  # no teacher
    h, w = grid
    num = h * w
    num_mask = int(round(ratio * num))
    gen = torch.Generator().manual_seed(3)
    out = masking(None, progress=0.3, generator=gen, batch_size=16)
    _check_mae_conventions(out, 16, num, num_mask)
    assert out.depth.tolist() == [1] * 16
    pieces = out.hierarchy.level(1)
    # Masks are whole block pieces, at most one cut.
    for b in range(16):
        assert _split_nodes(out.mask[b], pieces[b]) <= 1
    # piece ids are compact, numbered by first patch (Hierarchy rules)
    for b in range(16):
        ids = pieces[b].tolist()
        seen = []
        for i in ids:
            if i not in seen:
                seen.append(i)
        assert seen == list(range(len(seen)))
        assert int(out.hierarchy.num_nodes[b, 1]) == len(seen)


def test_blockwise_masks_blocks_in_drawing_order():
    masking = BlockwiseMasking((8, 8), mask_ratio=0.5, min_block_patches=2)
    out = masking(torch.zeros(8, 64, 64), depth=[0] * 8,
                  generator=torch.Generator().manual_seed(0))
    # Redraw the same blocks: noise first, then the blocks.
    gen = torch.Generator().manual_seed(0)
    torch.rand(8, 64, generator=gen)
    first = masking.blocks(8, generator=gen)
    blocks = masking._block_count(32)
    for b in range(8):
        masked_blocks = first[b][out.mask[b] == 1]
        visible_blocks = first[b][out.mask[b] == 0]
        # every masked patch comes from a block drawn no later than any
        # visible patch's block (blocks are taken in order)
        assert int(masked_blocks.max()) <= int(visible_blocks.min())
        assert int(masked_blocks.max()) < blocks  # blocks covered enough
    # a block is a rectangle: check one piece of the first block
    b0 = (first[0] == 0).reshape(8, 8)
    rows, cols = b0.any(1).nonzero().flatten(), b0.any(0).nonzero().flatten()
    assert int(b0.sum()) == len(rows) * len(cols)
    assert int(b0.sum()) >= 1


def test_blockwise_blocks_respect_area_and_aspect():
    masking = BlockwiseMasking(
        (14, 14), mask_ratio=0.75, min_block_patches=4, max_block_patches=12,
        min_aspect=0.5)
    first = masking.blocks(64, generator=torch.Generator().manual_seed(1))
    block = (first == 0).reshape(64, 14, 14)  # block 0 is never covered
    area = block.flatten(1).sum(1).float()
    rows = block.any(2).sum(1).float()
    cols = block.any(1).sum(1).float()
    assert bool((area == rows * cols).all())
    # rounding of sqrt(area * aspect) can move the area a little
    assert float(area.min()) >= 2 and float(area.max()) <= 20
    assert float((rows / cols).max()) <= 2.5
    assert float((rows / cols).min()) >= 0.4


def test_blockwise_is_deterministic_and_batch_device_errors():
    masking = BlockwiseMasking((8, 8))
    a = masking(None, depth=[0] * 4,
                generator=torch.Generator().manual_seed(5))
    b = masking(torch.randn(4, 64, 64),
                generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.mask, b.mask)
    with pytest.raises(ValueError, match='batch_size'):
        masking(None)
    with pytest.raises(ValueError, match='differs'):
        masking(torch.randn(4, 64, 64), batch_size=3)
    with pytest.raises(ValueError, match='patches'):
        masking(torch.randn(4, 49, 49))
    for bad in (dict(min_block_patches=0), dict(max_block_patches=2),
                dict(min_aspect=0.0), dict(min_aspect=2.0),
                dict(num_blocks=0), dict(mask_ratio=1.0)):
        with pytest.raises(ValueError):
            BlockwiseMasking((8, 8), **bad)


def test_blockwise_falls_back_to_single_patches_when_blocks_run_out():
    # one block of one patch cannot cover 6 masked patches
    masking = BlockwiseMasking((3, 4), mask_ratio=0.5, min_block_patches=1,
                               max_block_patches=1, num_blocks=1)
    out = masking(None, batch_size=5,
                  generator=torch.Generator().manual_seed(0))
    assert bool((out.mask.sum(1) == 6).all())


def test_blockwise_node_size_is_the_mean_masked_piece_size():
    # one 2x2 block (area 4, aspect 1) masks exactly the 4 masked patches
    masking = BlockwiseMasking((4, 4), mask_ratio=0.25, min_block_patches=4,
                               max_block_patches=4, min_aspect=1.0,
                               num_blocks=1)
    out = masking(None, batch_size=3,
                  generator=torch.Generator().manual_seed(0))
    assert out.node_size.dtype == out.mask.dtype
    assert out.node_size.device == out.mask.device
    assert torch.equal(out.node_size, torch.full((3, ), 4.0))
    # 8 masked: the whole block (4) and 4 single patches -> 8 / 5 regions
    masking = BlockwiseMasking((4, 4), mask_ratio=0.5, min_block_patches=4,
                               max_block_patches=4, min_aspect=1.0,
                               num_blocks=1)
    out = masking(None, batch_size=3,
                  generator=torch.Generator().manual_seed(1))
    assert torch.allclose(out.node_size, torch.full((3, ), 1.6))
    # default blocks: every masked region is a block piece of its hierarchy
    masking = BlockwiseMasking((8, 8))
    out = masking(None, batch_size=4,
                  generator=torch.Generator().manual_seed(2))
    pieces = out.hierarchy.ancestors[:, 1].flatten(1)
    for b in range(4):
        touched = pieces[b][out.mask[b] > 0].unique()
        sizes = torch.stack([(pieces[b] == p).sum() for p in touched])
        assert float(out.node_size[b]) == pytest.approx(
            float(sizes.float().mean()))


@pytest.mark.parametrize('progress,depth', [(0.0, 0), (0.5, 2), (1.0, 4)])
def test_random_hierarchy_exact_ratio_whole_nodes(progress, depth):
    masking = MODELS.build(
        dict(type='RandomHierarchyMasking', grid_size=(8, 8),
             mask_ratio=0.75, d_max=4.0))
    assert isinstance(masking, RandomHierarchyMasking)
    assert masking.requires_affinity is False
    out = masking(None, progress=progress, batch_size=6,
                  generator=torch.Generator().manual_seed(2))
    _check_mae_conventions(out, 6, 64, 48)
    assert out.depth.tolist() == [depth] * 6
    nodes = out.hierarchy.level(depth)
    for b in range(6):
        assert _split_nodes(out.mask[b], nodes[b]) <= 1
    # node sizes grow with depth as in EHM's trees (~2**depth patches)
    sizes = out.hierarchy.node_sizes()[:, depth]
    mean_size = float(sizes.sum() / (sizes > 0).sum())
    assert 2**depth / 2 <= mean_size <= 2**depth * 2


def test_random_hierarchy_ignores_the_image(smooth_affinity):
    masking = RandomHierarchyMasking((8, 8), mask_ratio=0.75, d_max=4.0)
    outs = [
        masking(aff, progress=0.7,
                generator=torch.Generator().manual_seed(9))
        for aff in (smooth_affinity(3, 8, 8, seed=0),
                    smooth_affinity(3, 8, 8, seed=1))
    ]
    outs.append(masking(None, progress=0.7, batch_size=3,
                        generator=torch.Generator().manual_seed(9)))
    outs.append(masking(None, depth=[3, 3, 3],
                        generator=torch.Generator().manual_seed(9)))
    for out in outs[1:3]:
        assert torch.equal(out.mask, outs[0].mask)
        assert torch.equal(out.hierarchy.ancestors,
                           outs[0].hierarchy.ancestors)
    # different images of a batch get different trees
    anc = outs[0].hierarchy.ancestors
    assert not torch.equal(anc[0], anc[1])
    assert outs[-1].depth.tolist() == [3, 3, 3]
    with pytest.raises(ValueError, match='exactly one'):
        masking(None, batch_size=3)


def test_compact_node_ids():
    nodes = torch.tensor([[7, 7, 3, 9, 3], [0, 1, 0, 1, 2]])
    assert compact_node_ids(nodes, 10).tolist() == [[0, 0, 1, 2, 1],
                                                    [0, 1, 0, 1, 2]]


def _blocks_in_masks(masking: BlockwiseMasking, batch: int,
                     seed: int) -> torch.Tensor:
    """How many drawn blocks each mask takes patches from."""
    out = masking(None, batch_size=batch,
                  generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed)  # the same draws: noise, blocks
    torch.rand(batch, masking.num_patches, generator=gen)
    first = masking.blocks(batch, generator=gen)  # [B, N]
    blocks = masking._block_count(masking.num_masked)
    taken = torch.zeros(batch, blocks + 1).scatter_(
        1, first, out.mask)[:, :blocks]  # [B, K] 1 if a block is masked
    return (taken > 0).sum(1).float()


def test_beit_block_sizes_scaled_to_the_grid():
    # BEiT: blocks of 16 .. 75 patches (its masked count) of 14 x 14; the
    # same fractions of an 8 x 8 grid are 16 * 64 / 196 = 5.2 and
    # 75 * 64 / 196 = 24.5 patches
    assert beit_block_patches((14, 14)) == (16, 75)
    assert beit_block_patches((8, 8)) == (5, 24)
    masking = MODELS.build(dict(type='BlockwiseMasking', grid_size=(8, 8),
                                mask_ratio=0.75, size_range='beit'))
    assert (masking.min_block_patches, masking.max_block_patches) == (5, 24)
    assert "size_range='beit'" in repr(masking)
    _, _, rows, cols = masking.rectangles(
        1000, generator=torch.Generator().manual_seed(0))
    area = (rows * cols).float()
    # rounding the sides moves a few areas out of [5, 24]
    assert float(((area >= 5) & (area <= 24)).float().mean()) >= 0.95
    assert 3 <= float(area.min()) and float(area.max()) <= 28
    assert float(area.mean()) == pytest.approx((5 + 24) / 2, abs=0.5)
    # exact ratio, and a mask takes patches from about 6 blocks (4 to 9 in
    # 90 % of masks), where today's 4 .. 48 patches make about 3
    out = masking(None, batch_size=64,
                  generator=torch.Generator().manual_seed(1))
    assert bool((out.mask.sum(1) == 48).all())
    count = _blocks_in_masks(masking, 1000, seed=2)
    assert 5.5 <= float(count.mean()) <= 7.0
    assert float(torch.quantile(count, 0.05)) >= 3
    assert float(torch.quantile(count, 0.95)) <= 10
    wide = _blocks_in_masks(BlockwiseMasking((8, 8)), 1000, seed=2)
    assert float(wide.mean()) < 4
    # the option owns both sizes
    for bad in (dict(size_range='beit', min_block_patches=2),
                dict(size_range='beit', max_block_patches=30),
                dict(size_range='mae')):
        with pytest.raises(ValueError, match='size_range'):
            BlockwiseMasking((8, 8), **bad)
