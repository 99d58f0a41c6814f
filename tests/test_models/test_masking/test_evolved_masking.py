# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Tests of the registered ``EvolvedHierarchicalMasking`` module."""
import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mmpretrain.models import MAEViT
from mmpretrain.registry import MODELS

from ehm_mm import EvolvedHierarchicalMasking, MaskingResult, build_hierarchy


def _build(grid=(14, 14), **kwargs) -> EvolvedHierarchicalMasking:
    cfg = dict(type='EvolvedHierarchicalMasking', grid_size=grid,
               mask_ratio=0.75, d_min=0.0, d_max=5.0, schedule='linear')
    cfg.update(kwargs)
    return MODELS.build(cfg)


def _split_nodes(mask: torch.Tensor, nodes: torch.Tensor) -> int:
    num = nodes.numel()
    share = torch.zeros(num).index_add_(0, nodes, mask)
    sizes = torch.bincount(nodes, minlength=num).float()
    return int(((share > 0) & (share < sizes)).sum())


def test_builds_from_config_and_masks_a_batch(smooth_affinity):
    masking = _build()
    assert isinstance(masking, EvolvedHierarchicalMasking)
    assert masking.depth_at(0.0) == 0.0 and masking.depth_at(1.0) == 5.0
    assert masking.depth_at(0.3) == pytest.approx(1.5)
    out = masking(smooth_affinity(6, 14, 14), progress=0.4)
    assert isinstance(out, MaskingResult)
    assert out.mask.shape == (6, 196) and out.mask.dtype == torch.float32
    assert out.ids_restore.shape == (6, 196)
    assert out.ids_keep.shape == (6, 49)
    assert out.depth.tolist() == [2] * 6  # d(0.4) = 2 exactly
    assert bool((out.mask.sum(1) == 147).all())
    assert out.hierarchy.ancestors.shape[::2] == (6, 196)
    # whole depth-2 nodes, at most one split, visible tokens gatherable
    for b in range(6):
        nodes = out.hierarchy.level(2)[b]
        assert _split_nodes(out.mask[b], nodes) <= 1
    tokens = torch.randn(6, 196, 8)
    visible = tokens.gather(1, out.ids_keep[..., None].expand(-1, -1, 8))
    assert visible.shape == (6, 49, 8)


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 8),
    w=st.integers(1, 8),
    ratio=st.floats(0.01, 0.99),
    progress=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16))
def test_visible_count_is_exact_for_any_grid_and_ratio(
        h, w, ratio, progress, seed, smooth_affinity):
    height = math.ceil(math.log2(h * w)) if h * w > 1 else 0
    masking = _build((h, w), mask_ratio=ratio, d_max=min(3.0, height))
    affinity = smooth_affinity(3, h, w, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    out = masking(affinity, progress=progress, generator=gen)
    num_mask = round(ratio * h * w)
    assert bool((out.mask.sum(1) == num_mask).all())
    assert out.ids_keep.shape == (3, h * w - num_mask)
    assert bool((out.depth <= out.hierarchy.heights).all())
    assert torch.equal(
        torch.argsort(out.ids_restore, 1)[:, :h * w - num_mask],
        out.ids_keep)


def test_depth_zero_schedule_is_mae_random_masking(smooth_affinity):
    masking = _build(d_min=0.0, d_max=0.0)
    mae = MAEViT(arch=dict(embed_dims=16, num_layers=1, num_heads=2,
                           feedforward_channels=32),
                 img_size=56, patch_size=4)
    tokens = torch.randn(4, 196, 16)
    torch.manual_seed(5)
    _, mae_mask, mae_restore = mae.random_masking(tokens, 0.75)
    torch.manual_seed(5)
    out = masking(smooth_affinity(4, 14, 14), progress=0.7)
    assert out.hierarchy.num_levels == 1  # depth 0 builds no tree
    assert torch.equal(out.mask, mae_mask)
    assert torch.equal(out.ids_restore, mae_restore)
    assert out.depth.tolist() == [0] * 4


def test_stochastic_depth_and_same_seed_same_masks(smooth_affinity):
    masking = _build((6, 6), d_min=1.0, d_max=3.0)
    affinity = smooth_affinity(64, 6, 6, seed=1)
    first = masking(affinity, progress=0.5,
                    generator=torch.Generator().manual_seed(0))
    assert set(first.depth.tolist()) == {2}  # d(0.5) = 2
    masking = _build((6, 6), d_min=1.0, d_max=4.0)
    first = masking(affinity, progress=0.5,
                    generator=torch.Generator().manual_seed(0))
    assert set(first.depth.tolist()) == {2, 3}  # d(0.5) = 2.5
    assert first.hierarchy.num_levels == 4  # only the levels needed
    again = masking(affinity, progress=0.5,
                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(first.mask, again.mask)
    assert torch.equal(first.depth, again.depth)
    other = masking(affinity, progress=0.5,
                    generator=torch.Generator().manual_seed(1))
    assert not torch.equal(first.mask, other.mask)


def test_depth_override_is_clamped_to_tree_height(smooth_affinity):
    masking = _build((4, 4), d_max=4.0)
    affinity = smooth_affinity(3, 4, 4)
    out = masking(affinity, depth=50)
    assert torch.equal(out.depth, out.hierarchy.heights)
    per_image = torch.tensor([0, 1, 2])
    out = masking(affinity, depth=per_image)
    assert out.depth.tolist() == [0, 1, 2]
    out = masking(affinity, depth=[0, 1, 2])  # host list: levels 0-2 only
    assert out.depth.tolist() == [0, 1, 2]
    assert out.hierarchy.num_levels == 3
    with pytest.raises(ValueError, match='exactly one'):
        masking(affinity)
    with pytest.raises(ValueError, match='exactly one'):
        masking(affinity, progress=0.5, depth=1)
    with pytest.raises(ValueError, match='depth'):
        masking(affinity, depth=-1)
    with pytest.raises(ValueError, match='depth'):
        masking(affinity, depth=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match='depth'):
        masking(affinity, depth=[1, 2])
    with pytest.raises(TypeError, match='grid_size at build'):
        masking(affinity, (4, 4), depth=1)


def test_host_depths_give_the_same_masks_as_device_depths(smooth_affinity):
    masking = _build((6, 6), d_min=1.0, d_max=4.0)
    affinity = smooth_affinity(16, 6, 6, seed=2)
    depth = masking.draw_depths(0.5, 16, random.Random(3))
    assert set(depth) == {2, 3}
    host = masking(affinity, depth=depth,
                   generator=torch.Generator().manual_seed(0))
    device = masking(affinity, depth=torch.tensor(depth),
                     generator=torch.Generator().manual_seed(0))
    assert torch.equal(host.mask, device.mask)
    assert torch.equal(host.ids_restore, device.ids_restore)
    assert host.hierarchy.num_levels == 4
    assert torch.equal(host.hierarchy.ancestors,
                       device.hierarchy.ancestors[:, :4])


def test_all_zero_depths_need_no_affinity():
    masking = _build((4, 4), d_max=4.0)
    out = masking(None, depth=[0, 0, 0],
                  generator=torch.Generator().manual_seed(0))
    ref = masking(torch.rand(3, 16, 16), depth=0,
                  generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.mask, ref.mask)
    assert out.mask.shape == (3, 16) and out.hierarchy.num_levels == 1
    for depth in (0, [0, 1], torch.zeros(2, dtype=torch.long)):
        with pytest.raises(ValueError, match='affinity may only be None'):
            masking(None, depth=depth)


def test_whole_trees_for_display(smooth_affinity):
    masking = _build((6, 6), hierarchy_cfg=dict(rounds=2))
    affinity = smooth_affinity(2, 6, 6)
    tree = masking.hierarchy(affinity)
    assert torch.equal(tree.ancestors,
                       build_hierarchy(affinity, (6, 6), rounds=2).ancestors)
    assert bool((tree.num_nodes[:, -1] == 1).all())


def test_schedule_beyond_the_tree_is_refused_at_build():
    assert _build(d_max=8.0).depth_schedule.max_depth == 8
    with pytest.raises(ValueError, match='d_max=8.5'):
        _build(d_max=8.5)
    _build((2, 3), d_max=3.0)
    with pytest.raises(ValueError, match='d_max=3.5'):
        _build((2, 3), d_max=3.5)
    with pytest.raises(ValueError, match='max_levels'):
        _build(d_max=5.0, hierarchy_cfg=dict(max_levels=4))
    with pytest.raises(ValueError, match='d_min=9'):
        _build(d_min=9.0, d_max=0.0)
    with pytest.raises(TypeError, match='grid_size'):
        _build(14)


@pytest.mark.parametrize('kwargs, error, match', [
    (dict(mask_ratio=0.0), ValueError, 'mask_ratio'),
    (dict(mask_ratio=1.0), ValueError, 'mask_ratio'),
    (dict(mask_ratio=-0.5), ValueError, 'mask_ratio'),
    (dict(d_max=-1.0), ValueError, 'd_max'),
    (dict(schedule='exponential'), ValueError, 'schedule'),
    (dict(hierarchy_cfg=dict(round=2)), ValueError, 'hierarchy_cfg'),
    (dict(hierarchy_cfg=dict(rounds=0)), ValueError, 'rounds'),
    (dict(nonfinite='ignore'), ValueError, 'nonfinite'),
])
def test_bad_config_fails_at_build_time(kwargs, error, match):
    with pytest.raises(error, match=match):
        _build(**kwargs)


def test_bad_affinity_is_refused():
    masking = _build((4, 4), d_max=3.0)
    with pytest.raises(ValueError, match=r'\[B, N, N\]'):
        masking(torch.rand(2, 16, 8), progress=0.1)
    with pytest.raises(ValueError, match='grid_size'):
        masking(torch.rand(2, 15, 15), progress=0.1)
    with pytest.raises(ValueError, match='progress'):
        masking(torch.rand(2, 16, 16), progress=1.5)
    affinity = torch.rand(2, 16, 16)
    affinity[0, 3, 3] = math.nan
    with pytest.raises(ValueError, match=r'NaN or inf for images \[0\]'):
        _build((4, 4), d_max=3.0, nonfinite='error')(affinity, progress=0.5)


def test_nonfinite_images_get_random_masks_on_the_device(smooth_affinity):
    masking = _build((6, 6), d_min=2.0, d_max=2.0)
    assert masking.nonfinite == 'random'  # the default: no host read
    affinity = smooth_affinity(3, 6, 6)
    affinity[1, 0, 5] = math.inf
    out = masking(affinity, progress=0.5)
    assert out.nonfinite.tolist() == [False, True, False]
    assert out.depth.tolist() == [2, 0, 2]
    assert bool((out.mask.sum(1) == 27).all())
    # the other images' masks do not depend on the bad one
    clean = smooth_affinity(3, 6, 6)
    gen = torch.Generator().manual_seed(4)
    ref = masking(clean, progress=0.5, generator=gen)
    gen = torch.Generator().manual_seed(4)
    out = masking(affinity, progress=0.5, generator=gen)
    assert torch.equal(out.mask[[0, 2]], ref.mask[[0, 2]])
    assert not bool(masking(clean, progress=0.5).nonfinite.any())
    overflow = clean.clone()
    overflow[2] = 3e38
    assert masking(overflow, progress=0.5).nonfinite.tolist() == [
        False, False, True]


def test_half_precision_affinity_is_accepted(smooth_affinity):
    masking = _build((6, 6), d_min=3.0, d_max=3.0)
    affinity = smooth_affinity(4, 6, 6, seed=4)
    for dtype in (torch.float16, torch.bfloat16):
        low = affinity.to(dtype)
        torch.manual_seed(0)
        out = masking(low, progress=0.0)
        torch.manual_seed(0)
        ref = masking(low.float(), progress=0.0)
        assert out.mask.dtype == torch.float32
        assert torch.equal(out.mask, ref.mask)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA device')
def test_runs_on_cuda(smooth_affinity):
    masking = _build(d_min=2.0, d_max=2.0).cuda()
    affinity = smooth_affinity(8, 14, 14).to('cuda', torch.bfloat16)
    out = masking(affinity, progress=0.5)
    for tensor in (out.mask, out.ids_restore, out.ids_keep, out.depth):
        assert tensor.device.type == 'cuda'
    assert bool((out.mask.sum(1) == 147).all())
    gen = torch.Generator(device='cuda').manual_seed(0)
    again = masking(affinity, progress=0.5, generator=gen)
    gen = torch.Generator(device='cuda').manual_seed(0)
    assert torch.equal(
        again.mask, masking(affinity, progress=0.5, generator=gen).mask)
    host = masking(affinity, depth=[2] * 8)
    assert host.depth.device.type == 'cuda' and host.depth.tolist() == [2] * 8
