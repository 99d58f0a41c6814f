# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Tests of evolved mask generation from tree nodes (``mask_nodes``)."""
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mmpretrain.models import MAEViT

from ehm_mm import build_hierarchy
from ehm_mm.models.masking.evolved_masking import mask_nodes, num_masked


def _identity(batch: int, num: int) -> torch.Tensor:
    return torch.arange(num).expand(batch, num).contiguous()


def _check_ids(mask, ids_restore, ids_keep, num_mask):
    batch, num = mask.shape
    assert mask.dtype == torch.float32
    assert ids_restore.dtype == ids_keep.dtype == torch.long
    assert bool((mask.sum(1) == num_mask).all())
    assert ids_keep.shape == (batch, num - num_mask)
    # ids_restore inverts a shuffle that lists the visible patches first
    shuffle = torch.argsort(ids_restore, dim=1)
    assert torch.equal(shuffle[:, :num - num_mask], ids_keep)
    assert bool((mask.gather(1, ids_keep) == 0).all())
    assert bool((mask.gather(1, shuffle[:, num - num_mask:]) == 1).all())


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    ratio=st.floats(0.0, 1.0, exclude_min=True, exclude_max=True),
    seed=st.integers(0, 2**16),
    depth=st.integers(0, 8))
def test_exact_count_whole_nodes_and_at_most_one_split(h, w, ratio, seed,
                                                       depth,
                                                       smooth_affinity):
    affinity = smooth_affinity(2, h, w, seed=seed)
    tree = build_hierarchy(affinity, (h, w))
    depth = min(depth, tree.num_levels - 1)
    nodes = tree.level(depth)
    gen = torch.Generator().manual_seed(seed)
    mask, ids_restore, ids_keep = mask_nodes(nodes, ratio, generator=gen)
    num_mask = round(ratio * h * w)
    _check_ids(mask, ids_restore, ids_keep, num_mask)
    for b in range(2):
        masked_share = torch.zeros(h * w).index_add_(0, nodes[b], mask[b])
        sizes = torch.bincount(nodes[b], minlength=h * w).float()
        split = (masked_share > 0) & (masked_share < sizes)
        assert int(split.sum()) <= 1


def test_depth_zero_reproduces_mae_random_masking():
    mae = MAEViT(arch=dict(embed_dims=32, num_layers=1, num_heads=2,
                           feedforward_channels=64),
                 img_size=32, patch_size=8)
    tokens = torch.randn(5, 16, 32)
    for ratio in (0.75, 0.5, 0.3, 0.9, 0.6):
        torch.manual_seed(11)
        _, mae_mask, mae_restore = mae.random_masking(tokens, ratio)
        torch.manual_seed(11)
        mask, ids_restore, ids_keep = mask_nodes(_identity(5, 16), ratio)
        # the same shuffle, whatever the counts
        assert torch.equal(ids_restore, mae_restore)
        mae_keep = int(16 * (1 - ratio))
        mae_shuffle = torch.argsort(mae_restore, 1)
        if mae_keep == 16 - num_masked(16, ratio):  # all but 0.9
            assert torch.equal(mask, mae_mask)
            assert torch.equal(ids_keep, mae_shuffle[:, :mae_keep])
        else:  # 0.9: MAE truncates N * (1 - ratio), we round N * ratio
            assert ids_keep.shape[1] == mae_keep + 1
            assert torch.equal(ids_keep[:, :mae_keep],
                               mae_shuffle[:, :mae_keep])


def test_rounding_convention_is_documented_case():
    # MAE keeps int(10 * 0.55) = 5; round(4.5) = 4 masks 4, keeps 6
    assert int(10 * (1 - 0.45)) == 5
    assert num_masked(10, 0.45) == 4
    mask, _, ids_keep = mask_nodes(_identity(3, 10), 0.45)
    assert mask.sum(1).tolist() == [4.0] * 3 and ids_keep.shape == (3, 6)


# chi-square critical value, 19 degrees of freedom, p = 0.001
_CHI2_19_999 = 43.82


def test_depth_zero_mask_distribution_is_uniform():
    # 2 x 3 grid, ratio 0.5: the 20 masks of 3 patches are equally likely
    draws = 6000
    gen = torch.Generator().manual_seed(0)
    mask, _, _ = mask_nodes(_identity(draws, 6), 0.5, generator=gen)
    patterns = {p: 0 for p in itertools.combinations(range(6), 3)}
    for row in mask.bool().tolist():
        patterns[tuple(i for i, m in enumerate(row) if m)] += 1
    expected = draws / len(patterns)
    chi2 = sum((c - expected)**2 / expected for c in patterns.values())
    assert chi2 < _CHI2_19_999
    # a biased masker fails the same test: masks from 2 x 1 blocks
    blocks = torch.tensor([0, 0, 1, 1, 2, 2]).expand(draws, 6).contiguous()
    mask, _, _ = mask_nodes(blocks, 0.5, generator=gen)
    counts = {p: 0 for p in patterns}
    for row in mask.bool().tolist():
        counts[tuple(i for i, m in enumerate(row) if m)] += 1
    chi2 = sum((c - expected)**2 / expected for c in counts.values())
    assert chi2 > _CHI2_19_999


def test_node_order_is_uniform_whatever_the_node_sizes():
    # one node of 5 patches and three single patches, mask 1 of 8: the
    # masked patch is in the big node when that node draws the highest of
    # the 4 node scores, with probability 1/4 (not 5/8)
    nodes = torch.tensor([0, 0, 0, 0, 0, 5, 6, 7]).expand(8000, 8)
    gen = torch.Generator().manual_seed(1)
    mask, _, _ = mask_nodes(nodes.contiguous(), 1 / 8, generator=gen)
    big = float(mask[:, :5].sum(1).mean())
    assert big == pytest.approx(0.25, abs=0.02)


def test_same_seed_same_masks_and_noise_argument():
    nodes = build_hierarchy(torch.rand(4, 36, 36), (6, 6)).level(2)
    first = mask_nodes(nodes, 0.6, generator=torch.Generator().manual_seed(3))
    again = mask_nodes(nodes, 0.6, generator=torch.Generator().manual_seed(3))
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    noise = torch.rand(4, 36, generator=torch.Generator().manual_seed(3))
    given_noise = mask_nodes(nodes, 0.6, noise=noise)
    assert torch.equal(given_noise[0], first[0])
    with pytest.raises(ValueError, match='noise'):
        mask_nodes(nodes, 0.6, noise=noise[:, :5])


@pytest.mark.parametrize('ratio', [0.0, 1.0, -0.2, 1.5, float('nan'), True])
def test_bad_ratio_is_refused(ratio):
    with pytest.raises(ValueError, match='mask_ratio'):
        mask_nodes(_identity(2, 4), ratio)


def test_bad_nodes_are_refused():
    with pytest.raises(ValueError, match='nodes'):
        mask_nodes(torch.zeros(2, 4), 0.5)
    with pytest.raises(ValueError, match='nodes'):
        mask_nodes(torch.zeros(4, dtype=torch.long), 0.5)
