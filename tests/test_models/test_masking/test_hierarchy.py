# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Tests of Adaptive Hierarchy Establishment (``build_hierarchy``)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ehm_mm import Hierarchy, build_hierarchy
from ehm_mm.models.masking.hierarchy import (
    default_max_levels,
    grid_edges,
    min_tree_height,
)


def _random_affinity(kind: str, batch: int, h: int, w: int, seed: int,
                     smooth) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    num = h * w
    if kind == 'noise':
        return torch.randn(batch, num, num, generator=gen)
    if kind == 'constant':
        return torch.ones(batch, num, num)
    if kind == 'ties':  # few distinct values: many exact ties
        return torch.randint(0, 3, (batch, num, num), generator=gen).float()
    return smooth(batch, h, w, seed=seed)


@settings(max_examples=80, deadline=None)
@given(
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    batch=st.integers(1, 3),
    kind=st.sampled_from(['noise', 'constant', 'ties', 'smooth']),
    rounds=st.integers(1, 4),
    tolerance=st.sampled_from([0.0, 0.5, 2.0, math.inf]),
    seed=st.integers(0, 2**16))
def test_every_level_is_a_binary_merge_of_connected_nodes(
        h, w, batch, kind, rounds, tolerance, seed, smooth_affinity,
        tree_checker):
    affinity = _random_affinity(kind, batch, h, w, seed, smooth_affinity)
    tree = build_hierarchy(
        affinity, (h, w), rounds=rounds, tolerance=tolerance)
    assert isinstance(tree, Hierarchy)
    assert tree.ancestors.shape[0::2] == (batch, h * w)
    tree_checker(tree)
    assert bool((tree.heights >= min_tree_height(h * w)).all())


def test_max_levels_caps_the_tree(smooth_affinity, tree_checker):
    affinity = smooth_affinity(2, 6, 6)
    tree = build_hierarchy(affinity, (6, 6), max_levels=2)
    assert tree.num_levels == 3
    assert bool((tree.num_nodes[:, -1] > 1).all())
    tree_checker(tree, max_levels=2)
    assert build_hierarchy(affinity, (6, 6), max_levels=0).num_levels == 1


def test_node_count_roughly_halves_on_smooth_affinities(smooth_affinity):
    affinity = smooth_affinity(16, 14, 14, seed=3)
    tree = build_hierarchy(affinity, (14, 14))
    counts = tree.num_nodes.float()
    # at most N / 5 nodes after 4 levels, for every image
    assert int(tree.num_nodes[:, 4].max()) <= 196 / 5
    # every level keeps at least half (binary tree) and shrinks markedly
    assert bool((counts[:, 1:] * 2 >= counts[:, :-1]).all())
    ratio = (counts[:, 1:5] / counts[:, :4]).mean()
    assert 0.5 <= float(ratio) < 0.65
    # pure reciprocal-nearest-neighbour merging shrinks far slower
    single_round = build_hierarchy(affinity, (14, 14), rounds=1)
    assert float(single_round.num_nodes[:, 4].float().mean()) > 196 / 4


def _quadrant_violations(tree: Hierarchy, quadrant: torch.Tensor) -> int:
    """Nodes spanning two quadrants without holding each of them whole."""
    bad = 0
    for b in range(tree.batch_size):
        for level in range(tree.num_levels):
            ids = tree.level(level)[b]
            for node in range(int(tree.num_nodes[b, level])):
                inside = ids == node
                touched = quadrant[inside].unique()
                if len(touched) > 1:
                    bad += not all(
                        bool(inside[quadrant == q].all()) for q in touched)
    return bad


@pytest.mark.parametrize('noise', [0.1, 0.3])
def test_planted_quadrants_are_respected(noise, quadrant_affinity):
    affinity, quadrant = quadrant_affinity(6, noise=noise, seed=1)
    tree = build_hierarchy(affinity, (14, 14))
    assert _quadrant_violations(tree, quadrant) == 0
    for b in range(6):
        pure_small_level = False
        for level in range(tree.num_levels):
            ids = tree.level(level)[b]
            count = int(tree.num_nodes[b, level])
            pure = all(
                len(quadrant[ids == node].unique()) == 1
                for node in range(count))
            pure_small_level |= count <= 8 and pure
        assert pure_small_level
    # matching with any neighbour, however dissimilar, leaks across
    greedy = build_hierarchy(affinity, (14, 14), tolerance=math.inf)
    assert _quadrant_violations(greedy, quadrant) > 0


def test_compact_and_static_shapes_agree(smooth_affinity):
    affinity = smooth_affinity(3, 5, 7, seed=5)
    compact = build_hierarchy(affinity, (5, 7), compact=True)
    static = build_hierarchy(affinity, (5, 7), compact=False)
    assert torch.equal(compact.ancestors, static.ancestors)
    assert torch.equal(compact.num_nodes, static.num_nodes)


def test_path_and_single_patch_grids(smooth_affinity, tree_checker):
    tree = build_hierarchy(torch.randn(2, 9, 9), (1, 9))
    tree_checker(tree)
    assert tree.num_levels >= 1 + math.ceil(math.log2(9))
    single = build_hierarchy(torch.ones(3, 1, 1), (1, 1))
    assert single.ancestors.shape == (3, 1, 1)
    assert single.heights.tolist() == [0, 0, 0]


def test_affinity_is_symmetrised_and_half_precision_is_accepted(
        smooth_affinity):
    affinity = smooth_affinity(2, 6, 6, seed=2)
    skew = torch.randn(2, 36, 36, generator=torch.Generator().manual_seed(0))
    affinity = affinity + 0.05 * skew  # not symmetric
    reference = build_hierarchy(affinity, (6, 6))
    assert torch.equal(
        build_hierarchy(affinity.transpose(1, 2), (6, 6)).ancestors,
        reference.ancestors)
    for dtype in (torch.float16, torch.bfloat16):
        low = affinity.to(dtype)
        tree = build_hierarchy(low, (6, 6))
        assert torch.equal(tree.ancestors,
                           build_hierarchy(low.float(), (6, 6)).ancestors)


def test_result_helpers(smooth_affinity):
    tree = build_hierarchy(smooth_affinity(2, 4, 4), (4, 4))
    sizes = tree.node_sizes()
    assert sizes.shape == tree.ancestors.shape
    assert bool((sizes.sum(-1) == 16).all())
    assert torch.equal((sizes > 0).sum(-1), tree.num_nodes)
    assert torch.equal(tree.level(-1), tree.ancestors[:, -1])
    with pytest.raises(ValueError, match='level'):
        tree.level(tree.num_levels)
    assert tree.to(torch.device('cpu')).grid_size == (4, 4)
    src, dst = grid_edges(2, 3)
    assert len(src) == 2 * (2 * 2 + 3 * 1)
    assert default_max_levels(196) == 16 and default_max_levels(1) == 0


@pytest.mark.parametrize('affinity, grid, error, match', [
    (torch.rand(2, 16), (4, 4), ValueError, r'\[B, N, N\]'),
    (torch.rand(2, 16, 15), (4, 4), ValueError, r'\[B, N, N\]'),
    (torch.rand(2, 16, 16), (4, 5), ValueError, 'grid_size'),
    (torch.rand(2, 16, 16), (4, ), TypeError, 'grid_size'),
    (torch.rand(2, 16, 16), (4.0, 4), TypeError, 'grid_size'),
    (torch.ones(2, 16, 16, dtype=torch.long), (4, 4), TypeError, 'floating'),
    ([[1.0]], (1, 1), TypeError, 'Tensor'),
])
def test_bad_input_is_refused(affinity, grid, error, match):
    with pytest.raises(error, match=match):
        build_hierarchy(affinity, grid)


@pytest.mark.parametrize('value', [math.nan, math.inf, -math.inf])
def test_nonfinite_affinity_is_refused(value):
    affinity = torch.rand(3, 9, 9)
    affinity[1, 2, 4] = value
    with pytest.raises(ValueError, match=r'NaN or inf for images \[1\]'):
        build_hierarchy(affinity, (3, 3))


def test_overflowing_affinity_is_refused():
    affinity = torch.full((1, 9, 9), 3e38)
    with pytest.raises(ValueError, match='overflow'):
        build_hierarchy(affinity, (3, 3))


@pytest.mark.parametrize('option', [
    dict(rounds=0), dict(rounds=1.5), dict(tolerance=-1.0),
    dict(tolerance=math.nan), dict(max_levels=-1), dict(max_levels=2.0)
])
def test_bad_options_are_refused(option):
    with pytest.raises(ValueError, match=next(iter(option))):
        build_hierarchy(torch.rand(1, 4, 4), (2, 2), **option)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_matches_cpu(smooth_affinity, tree_checker):
    affinity = smooth_affinity(4, 14, 14, seed=7)
    cpu = build_hierarchy(affinity, (14, 14))
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        gpu = build_hierarchy(affinity.to('cuda', dtype), (14, 14))
        assert gpu.ancestors.device.type == 'cuda'
        tree_checker(gpu.to(torch.device('cpu')))
        if dtype == torch.float32:
            # same arithmetic in the same order; only the spread estimate
            # (a reduction) may differ in the last bit
            levels = min(cpu.num_levels, gpu.num_levels)
            same = gpu.ancestors[:, :levels].cpu() == cpu.ancestors[:, :levels]
            assert float(same.float().mean()) > 0.95
