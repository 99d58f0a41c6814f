# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Tests of Adaptive Hierarchy Establishment (``build_hierarchy``)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ehm_mm import Hierarchy, build_hierarchy
from ehm_mm.models.masking import hierarchy as hierarchy_module
from ehm_mm.models.masking.hierarchy import (
    default_max_levels,
    grid_edges,
    min_tree_height,
    offdiagonal_stats,
)


def loop_hierarchy(affinity: torch.Tensor, h: int, w: int,
                   margin: torch.Tensor, rounds: int,
                   num_levels: int) -> torch.Tensor:
    """One image, one node and one pair at a time: the builder's oracle.

    The same rules as ``build_hierarchy`` written as plain loops over
    Python containers; float32 sums follow its order (parent row =
    ``row(a) + row(b)``, then the same for columns) so that every value,
    and so every tie, is bitwise the same. Returns ancestors
    ``[num_levels + 1, N]``.
    """
    f32 = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    weights, sizes = affinity.float(), [1.0] * (h * w)
    edges = [(r * w + c, r * w + c + 1) for r in range(h)
             for c in range(w - 1)]
    edges += [(r * w + c, r * w + c + w) for r in range(h - 1)
              for c in range(w)]
    node = list(range(h * w))
    levels = [list(node)]
    for _ in range(num_levels):
        k = len(sizes)
        pairs = {(min(a, b), max(a, b)) for a, b in edges if a != b}
        sim = {(a, b): (weights[a, b] + weights[b, a]) /
               (f32(2.0) * sizes[a] * sizes[b]) for a, b in pairs}
        best = [f32(-math.inf)] * k
        for (a, b), value in sim.items():
            best[a], best[b] = max(best[a], value), max(best[b], value)
        # a proposal's key: similarity, then the smaller pair (a, b)
        allowed = [(float(value), -a, -b, a, b)
                   for (a, b), value in sim.items()
                   if value >= best[a] - margin and value >= best[b] - margin]
        partner = list(range(k))
        for _ in range(rounds):
            offer = {}
            for key in allowed:
                a, b = key[3:]
                if partner[a] == a and partner[b] == b:
                    for p in (a, b):
                        offer[p] = max(offer.get(p, key), key)
            for p, key in offer.items():
                q = key[3] + key[4] - p
                if offer.get(q) == key:
                    partner[p] = q
        roots = [p for p in range(k) if partner[p] >= p]
        parent = [roots.index(min(p, partner[p])) for p in range(k)]
        kids = [(p, partner[p]) for p in roots]
        rows = torch.stack([weights[a] + weights[b] if a != b else weights[a]
                            for a, b in kids])
        weights = torch.stack([rows[:, a] + rows[:, b] if a != b else
                               rows[:, a] for a, b in kids], dim=1)
        sizes = [sizes[a] + (sizes[b] if a != b else 0) for a, b in kids]
        edges = [(parent[a], parent[b]) for a, b in edges]
        node = [parent[n] for n in node]
        levels.append(list(node))
    return torch.tensor(levels)


def _margins(affinity: torch.Tensor, tolerance: float) -> torch.Tensor:
    _, std = offdiagonal_stats(affinity.float())
    if math.isinf(tolerance):
        return torch.full_like(std, math.inf)
    return std * tolerance


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


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    kind=st.sampled_from(['noise', 'constant', 'ties', 'smooth']),
    rounds=st.integers(1, 4),
    tolerance=st.sampled_from([0.0, 0.5, 1.0, math.inf]),
    num_levels=st.sampled_from([None, 0, 1, 3, 20]),
    compact=st.booleans(),
    seed=st.integers(0, 2**16))
def test_batched_builder_matches_the_per_image_loop(
        h, w, kind, rounds, tolerance, num_levels, compact, seed,
        smooth_affinity):
    affinity = _random_affinity(kind, 2, h, w, seed, smooth_affinity)
    tree = build_hierarchy(affinity, (h, w), rounds=rounds,
                           tolerance=tolerance, num_levels=num_levels,
                           compact=compact)
    margins = _margins(affinity, tolerance)
    for b in range(2):
        expected = loop_hierarchy(affinity[b], h, w, margins[b], rounds,
                                  tree.num_levels - 1)
        assert torch.equal(tree.ancestors[b], expected)


@pytest.mark.parametrize('kind', ['smooth', 'quadrants'])
def test_batched_builder_matches_the_loop_on_a_14x14_grid(
        kind, smooth_affinity, quadrant_affinity):
    if kind == 'smooth':
        affinity = smooth_affinity(2, 14, 14, seed=3)
    else:
        affinity = quadrant_affinity(2, noise=0.3, seed=1)[0]
    tree = build_hierarchy(affinity, (14, 14), num_levels=5)
    margins = _margins(affinity, 1.0)
    for b in range(2):
        assert torch.equal(
            tree.ancestors[b],
            loop_hierarchy(affinity[b], 14, 14, margins[b], 4, 5))


def test_fixed_levels_are_a_prefix_of_the_whole_tree(smooth_affinity):
    affinity = smooth_affinity(3, 5, 6, seed=4)
    whole = build_hierarchy(affinity, (5, 6))
    for levels in (0, 2, whole.num_levels - 1, whole.num_levels + 3):
        for compact in (False, True):
            tree = build_hierarchy(affinity, (5, 6), num_levels=levels,
                                   compact=compact)
            assert tree.num_levels == levels + 1  # static: always levels
            top = min(tree.num_levels, whole.num_levels)
            assert torch.equal(tree.ancestors[:, :top],
                               whole.ancestors[:, :top])
            assert torch.equal(tree.heights,
                               whole.heights.clamp(max=levels))
            # levels past a one-node tree repeat its last level
            assert bool((tree.ancestors[:, top:] ==
                         whole.ancestors[:, -1:]).all())


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


@pytest.mark.parametrize('noise', [0.1, 0.3])
def test_planted_quadrants_are_respected(noise, quadrant_affinity,
                                         quadrant_violations):
    affinity, quadrant = quadrant_affinity(6, noise=noise, seed=1)
    tree = build_hierarchy(affinity, (14, 14))
    assert quadrant_violations(tree, quadrant) == 0
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
    assert quadrant_violations(greedy, quadrant) > 0


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
    dict(tolerance=math.nan), dict(max_levels=-1), dict(max_levels=2.0),
    dict(num_levels=-1), dict(num_levels=True)
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


def test_compiled_levels_trace_whole_and_give_the_same_trees(
        smooth_affinity, monkeypatch):
    # fullgraph=True fails on any graph break, e.g. a host read creeping
    # into a level; aot_eager traces like inductor without its C++ build.
    compiled = torch.compile(
        hierarchy_module._level, fullgraph=True, dynamic=False,
        backend='aot_eager')
    monkeypatch.setitem(hierarchy_module._COMPILED, 'cpu', compiled)
    affinity = smooth_affinity(3, 6, 7, seed=6)
    tree = build_hierarchy(affinity, (6, 7), num_levels=4, compile=True)
    eager = build_hierarchy(affinity, (6, 7), num_levels=4, compact=False)
    assert torch.equal(tree.ancestors, eager.ancestors)
    assert torch.equal(tree.num_nodes, eager.num_nodes)
    with pytest.raises(ValueError, match='compile needs static shapes'):
        build_hierarchy(affinity, (6, 7), compile=True, compact=True)
