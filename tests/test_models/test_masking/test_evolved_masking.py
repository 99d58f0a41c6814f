# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Tests of the registered ``EvolvedHierarchicalMasking`` module."""
import math
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mmpretrain.models import MAEViT
from mmpretrain.registry import MODELS

from ehm_mm import EvolvedHierarchicalMasking, MaskingResult
from ehm_mm.models.masking import evolved_masking


def _build(**kwargs) -> EvolvedHierarchicalMasking:
    cfg = dict(type='EvolvedHierarchicalMasking', mask_ratio=0.75,
               d_min=0.0, d_max=5.0, schedule='linear')
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
    out = masking(smooth_affinity(6, 14, 14), grid_size=(14, 14),
                  progress=0.4)
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
    masking = _build(mask_ratio=ratio, d_max=3.0)
    affinity = smooth_affinity(3, h, w, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    out = masking(affinity, (h, w), progress=progress, generator=gen)
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
    out = masking(smooth_affinity(4, 14, 14), (14, 14), progress=0.7)
    assert torch.equal(out.mask, mae_mask)
    assert torch.equal(out.ids_restore, mae_restore)
    assert out.depth.tolist() == [0] * 4


def test_stochastic_depth_and_same_seed_same_masks(smooth_affinity):
    masking = _build(d_min=1.0, d_max=4.0)
    affinity = smooth_affinity(64, 6, 6, seed=1)
    first = masking(affinity, (6, 6), progress=0.5,
                    generator=torch.Generator().manual_seed(0))
    assert set(first.depth.tolist()) == {2, 3}  # d(0.5) = 2.5
    again = masking(affinity, (6, 6), progress=0.5,
                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(first.mask, again.mask)
    assert torch.equal(first.depth, again.depth)
    other = masking(affinity, (6, 6), progress=0.5,
                    generator=torch.Generator().manual_seed(1))
    assert not torch.equal(first.mask, other.mask)


def test_depth_override_is_clamped_to_tree_height(smooth_affinity):
    masking = _build()
    affinity = smooth_affinity(3, 4, 4)
    out = masking(affinity, (4, 4), depth=50)
    assert torch.equal(out.depth, out.hierarchy.heights)
    per_image = torch.tensor([0, 1, 2])
    out = masking(affinity, (4, 4), depth=per_image)
    assert out.depth.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match='exactly one'):
        masking(affinity, (4, 4))
    with pytest.raises(ValueError, match='exactly one'):
        masking(affinity, (4, 4), progress=0.5, depth=1)
    with pytest.raises(ValueError, match='depth'):
        masking(affinity, (4, 4), depth=-1)
    with pytest.raises(ValueError, match='depth'):
        masking(affinity, (4, 4), depth=torch.tensor([1, 2]))


def test_check_num_levels_refuses_a_schedule_beyond_the_tree():
    assert _build(d_max=8.0).check_num_levels((14, 14)) == 8
    with pytest.raises(ValueError, match='d_max=8.5'):
        _build(d_max=8.5).check_num_levels((14, 14))
    assert _build(d_max=3.0).check_num_levels((2, 3)) == 3
    with pytest.raises(ValueError, match='d_max=3.5'):
        _build(d_max=3.5).check_num_levels((2, 3))
    with pytest.raises(ValueError, match='max_levels'):
        _build(d_max=5.0,
               hierarchy_cfg=dict(max_levels=4)).check_num_levels((14, 14))
    with pytest.raises(ValueError, match='d_min=9'):
        _build(d_min=9.0, d_max=0.0).check_num_levels((14, 14))
    with pytest.raises(TypeError, match='grid_size'):
        _build().check_num_levels(14)


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
    masking = _build()
    with pytest.raises(ValueError, match=r'\[B, N, N\]'):
        masking(torch.rand(2, 16, 8), (4, 4), progress=0.1)
    with pytest.raises(ValueError, match='grid_size'):
        masking(torch.rand(2, 16, 16), (3, 5), progress=0.1)
    with pytest.raises(ValueError, match='progress'):
        masking(torch.rand(2, 16, 16), (4, 4), progress=1.5)
    affinity = torch.rand(2, 16, 16)
    affinity[0, 3, 3] = math.nan
    with pytest.raises(ValueError, match='NaN or inf'):
        masking(affinity, (4, 4), progress=0.1)


def test_nonfinite_fallback_logs_and_masks_randomly(smooth_affinity):
    masking = _build(nonfinite='random', d_min=2.0, d_max=2.0)
    affinity = smooth_affinity(3, 6, 6)
    affinity[1, 0, 5] = math.inf
    with mock.patch.object(evolved_masking, 'print_log') as log:
        out = masking(affinity, (6, 6), progress=0.5)
    assert log.call_count == 1 and '1 of 3 images' in log.call_args[0][0]
    assert out.depth.tolist() == [2, 0, 2]
    assert bool((out.mask.sum(1) == 27).all())
    with mock.patch.object(evolved_masking, 'print_log') as log:
        masking(smooth_affinity(3, 6, 6), (6, 6), progress=0.5)
    assert log.call_count == 0


def test_half_precision_affinity_is_accepted(smooth_affinity):
    masking = _build(d_min=3.0, d_max=3.0)
    affinity = smooth_affinity(4, 6, 6, seed=4)
    for dtype in (torch.float16, torch.bfloat16):
        low = affinity.to(dtype)
        torch.manual_seed(0)
        out = masking(low, (6, 6), progress=0.0)
        torch.manual_seed(0)
        ref = masking(low.float(), (6, 6), progress=0.0)
        assert out.mask.dtype == torch.float32
        assert torch.equal(out.mask, ref.mask)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA device')
def test_runs_on_cuda(smooth_affinity):
    masking = _build(d_min=2.0, d_max=2.0).cuda()
    affinity = smooth_affinity(8, 14, 14).to('cuda', torch.bfloat16)
    out = masking(affinity, (14, 14), progress=0.5)
    for tensor in (out.mask, out.ids_restore, out.ids_keep, out.depth):
        assert tensor.device.type == 'cuda'
    assert bool((out.mask.sum(1) == 147).all())
    gen = torch.Generator(device='cuda').manual_seed(0)
    again = masking(affinity, (14, 14), progress=0.5, generator=gen)
    gen = torch.Generator(device='cuda').manual_seed(0)
    assert torch.equal(
        again.mask,
        masking(affinity, (14, 14), progress=0.5, generator=gen).mask)
