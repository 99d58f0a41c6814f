# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The pipeline mask generator's ``depth_unit`` and ``boundary`` options."""
import math
from typing import List

import numpy as np
import pytest
import torch
from mask_generator_utils import assert_same_masks, single_and_batched
from mmpretrain.registry import MODELS, TRANSFORMS

import ehm_mm  # noqa: F401
from ehm_mm.datasets.transforms import (
    EvolvedHierarchicalMaskGenerator,
    cue_affinity,
    patch_cues,
)
from ehm_mm.datasets.transforms.evolved_hierarchical_mask_generator import (
    masks_of_requests,
)
from ehm_mm.models.masking import Hierarchy, build_hierarchy
from ehm_mm.models.masking.evolved_masking import subtree_order

OPTIONS = [(unit, boundary) for unit in ('level', 'node_size')
           for boundary in ('random', 'subtree')]
OPTION_IDS = [f'{u}-{b}' for u, b in OPTIONS]


def scene(seed: int, size: int = 64) -> np.ndarray:
    """A few flat rectangles on a background, with a little noise."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), rng.integers(0, 255, 3), dtype=np.float64)
    for _ in range(5):
        y, x = rng.integers(0, size - 8, 2)
        h, w = rng.integers(8, size // 2, 2)
        img[y:y + h, x:x + w] = rng.integers(0, 255, 3)
    img += rng.normal(0, 6, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def build(**kwargs) -> EvolvedHierarchicalMaskGenerator:
    # 8 x 8 grid of 8 px mask patches, output at 4 px tokens (scale 2)
    cfg = dict(
        type='EvolvedHierarchicalMaskGenerator', input_size=64,
        mask_patch_size=8, model_patch_size=4, mask_ratio=0.6, d_max=4.0)
    cfg.update(kwargs)
    return TRANSFORMS.build(cfg)


def tree_of(img: np.ndarray) -> Hierarchy:
    """The whole tree the generator builds for one image (8 px patches)."""
    affinity = cue_affinity(patch_cues(img[None], 8))
    return build_hierarchy(affinity, (8, 8))


def grid_mask(out: dict) -> torch.Tensor:
    """The mask on the 8 x 8 mask grid, float ``[64]``."""
    return torch.from_numpy(out['mask'][::2, ::2].reshape(-1)).float()


def shares(mask: torch.Tensor, nodes: torch.Tensor) -> List[tuple]:
    """Per node (masked patches, size)."""
    num = int(nodes.max()) + 1
    masked = torch.zeros(num).index_add_(0, nodes, mask)
    sizes = torch.bincount(nodes, minlength=num).float()
    return list(zip(masked.tolist(), sizes.tolist()))


def closest_level(counts: List[int], num: int, k: int) -> int:
    """Plain-Python reference: the level of mean size closest to 2**k."""
    dist = [abs(math.log2(num / c) - k) for c in counts]
    return dist.index(min(dist))


def split_descendants(mask: torch.Tensor, tree: Hierarchy,
                      level: int) -> List[int]:
    """Per level below ``level``, how many descendants of the one split
    node are split themselves (all <= 1: the masked part is whole
    descendants)."""
    nodes = tree.level(level)[0]
    split = [k for k, (m, s) in enumerate(shares(mask, nodes)) if 0 < m < s]
    assert len(split) <= 1
    if not split:
        return []
    inside = nodes == split[0]
    return [
        sum(0 < m < s
            for m, s in shares(mask[inside], tree.level(lvl)[0][inside]))
        for lvl in range(level)
    ]


@pytest.mark.parametrize('depth_unit, boundary', OPTIONS, ids=OPTION_IDS)
def test_exact_count_whole_nodes_and_node_size(depth_unit, boundary):
    gen = build(depth_unit=depth_unit, boundary=boundary)
    torch.manual_seed(0)
    levels_seen = set()
    for seed, progress in enumerate([0.2, 0.45, 0.6, 0.85, 1.0] * 2):
        img = scene(seed)
        gen.set_progress(progress)
        out = gen(dict(img=img))
        mask = grid_mask(out)
        assert out['mask'].shape == (16, 16)
        assert int(mask.sum()) == 38  # round(0.6 * 64)
        level = out['mask_depth']
        levels_seen.add(level)
        per_node = shares(mask, tree_of(img).level(level)[0])
        touched = [(m, s) for m, s in per_node if m > 0]
        assert sum(0 < m < s for m, s in per_node) <= 1  # one split node
        # the module's definition: touched nodes counted whole
        assert out['mask_node_size'] == pytest.approx(
            sum(s for _, s in touched) / len(touched))
    assert len(levels_seen) >= 3


@pytest.mark.parametrize('k', [1, 2, 3, 4])
def test_node_size_unit_cuts_the_level_closest_to_2_pow_d(k):
    gen = build(depth_unit='node_size', d_min=float(k), d_max=float(k),
                schedule='constant', progress=1.0)
    differs = 0
    for seed in range(8):
        img = scene(seed)
        out = gen(dict(img=img))
        counts = tree_of(img).num_nodes[0].tolist()
        built = counts[:3 * k + 1]  # ceil(3.0 * k) levels built
        level = out['mask_depth']
        assert level == closest_level(built, 64, k)
        best = abs(math.log2(64 / built[level]) - k)
        assert all(best <= abs(math.log2(64 / c) - k) for c in built)
        differs += level != k
    if k > 1:  # the unit matters: level k is not the level of size 2**k
        assert differs > 0


def test_node_size_unit_uses_only_the_levels_built():
    # levels_per_octave=1: a depth-1 image may use levels 0 and 1 only,
    # even where a higher level's mean node size is closer to 2 patches
    # (with rounds=1 level 1 holds ~45 nodes, level 2 ~34)
    gen = build(depth_unit='node_size', levels_per_octave=1.0,
                d_min=1.0, d_max=1.0, schedule='constant', progress=1.0,
                hierarchy_cfg=dict(rounds=1))
    for seed in range(4):
        img = scene(seed)
        affinity = cue_affinity(patch_cues(img[None], 8))
        counts = build_hierarchy(affinity, (8, 8),
                                 rounds=1).num_nodes[0].tolist()
        assert closest_level(counts, 64, 1) == 2
        assert gen(dict(img=img))['mask_depth'] == closest_level(
            counts[:2], 64, 1) == 1


@pytest.mark.parametrize('depth_unit', ['level', 'node_size'])
def test_subtree_boundary_masks_whole_descendants(depth_unit):
    subtree, random = (build(depth_unit=depth_unit, boundary=boundary,
                             d_min=4.0, d_max=4.0, schedule='constant',
                             mask_ratio=0.75, progress=1.0)
                       for boundary in ('subtree', 'random'))
    violations = 0
    for seed in range(16):
        img = scene(seed)
        tree = tree_of(img)
        torch.manual_seed(seed)
        out = subtree(dict(img=img))
        torch.manual_seed(seed)
        ref = random(dict(img=img))
        level = out['mask_depth']
        assert level == ref['mask_depth']
        mask, ref_mask = grid_mask(out), grid_mask(ref)
        assert int(mask.sum()) == 48
        assert all(c <= 1 for c in split_descendants(mask, tree, level))
        violations += any(
            c > 1 for c in split_descendants(ref_mask, tree, level))
        # same nodes wholly masked, same split node, same share of it
        nodes = tree.level(level)[0]
        assert shares(mask, nodes) == shares(ref_mask, nodes)
        assert out['mask_node_size'] == ref['mask_node_size']
    # random picks inside the split node are not whole descendants
    assert violations > 0


@pytest.mark.parametrize('depth_unit, boundary', OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize('progress', [0.2, 0.6])  # d = 0.8 and 2.4
def test_batched_equals_unbatched(depth_unit, boundary, progress):
    imgs = [scene(seed) for seed in range(8)]
    gen = dict(type='EvolvedHierarchicalMaskGenerator', input_size=64,
               mask_patch_size=8, model_patch_size=4, mask_ratio=0.6,
               d_max=4.0, progress=progress, depth_unit=depth_unit,
               boundary=boundary)
    expected, batch = single_and_batched(gen, imgs, seed=0)
    assert_same_masks(expected, batch)
    # a mixed batch: both rounded depths were drawn
    levels = {int(s.mask_depth) for s in batch['data_samples']}
    if depth_unit == 'level':
        assert levels == {math.floor(4 * progress), math.ceil(4 * progress)}
    else:
        assert len(levels) >= 2


@pytest.mark.parametrize('depth_unit, boundary', OPTIONS, ids=OPTION_IDS)
def test_cut_masks_mixed_progress_batch_equals_one_by_one(
        depth_unit, boundary):
    # requests of different progress (different tree depths) in one batch;
    # with rounds=1 a depth-1 image's closest level to 2 patches is 2,
    # which it must not take from a deeper image's tree
    gen = build(depth_unit=depth_unit, boundary=boundary,
                levels_per_octave=1.0, hierarchy_cfg=dict(rounds=1))
    torch.manual_seed(1)
    requests = [
        gen.request(scene(seed), progress) for seed, progress in enumerate(
            [0.1, 0.25, 0.3, 0.55, 0.8, 1.0, 0.25, 0.3])
    ]
    assert len({r.levels for r in requests}) >= 3
    together = masks_of_requests(requests)
    for request, (mask, level, size) in zip(requests, together):
        one = masks_of_requests([request])[0]
        assert np.array_equal(mask, one[0])
        assert (level, size) == one[1:]


def test_options_leave_depth_zero_and_shallow_masks_alone():
    # depth 0 draws nothing more and cuts level 0 in every option
    img = scene(0)
    masks = []
    for depth_unit, boundary in OPTIONS:
        gen = build(depth_unit=depth_unit, boundary=boundary, d_max=0.0,
                    schedule='constant', progress=0.5)
        torch.manual_seed(3)
        out = gen(dict(img=img))
        assert out['mask_depth'] == 0 and out['mask_node_size'] == 1.0
        masks.append(out['mask'])
    assert all(np.array_equal(m, masks[0]) for m in masks)
    # at level 1 a node's patches are its only descendants: the subtree
    # order is the random one
    torch.manual_seed(4)
    a = build(d_max=1.0, schedule='constant', progress=1.0,
              boundary='subtree')(dict(img=img))
    torch.manual_seed(4)
    b = build(d_max=1.0, schedule='constant', progress=1.0)(dict(img=img))
    assert np.array_equal(a['mask'], b['mask'])


def _module_error(**kwargs) -> str:
    cfg = dict(type='EvolvedHierarchicalMasking', grid_size=(6, 6),
               mask_ratio=0.6, d_max=3.0)
    cfg.update(kwargs)
    with pytest.raises(ValueError) as info:
        MODELS.build(cfg)
    return str(info.value)


@pytest.mark.parametrize('kwargs', [
    dict(depth_unit='levels'),
    dict(depth_unit=None),
    dict(levels_per_octave=0.5),
    dict(levels_per_octave=True),
    dict(levels_per_octave=math.inf),
    dict(boundary='edge'),
    # 6 x 6 grid: nodes of 2**6 > 36 patches (the level unit allows 6)
    dict(depth_unit='node_size', d_max=6.0),
])
def test_bad_options_raise_the_module_errors(kwargs):
    with pytest.raises(ValueError) as info:
        build(**dict(dict(input_size=48, d_max=3.0), **kwargs))
    assert str(info.value) == _module_error(**kwargs)
    assert any(name in str(info.value) for name in kwargs)


def test_node_size_limit_is_log2_n_and_level_limit_unchanged():
    assert build(input_size=48, d_max=5.0, depth_unit='node_size')
    assert build(input_size=48, d_max=6.0, depth_unit='level')
    with pytest.raises(ValueError, match='beyond the height 6'):
        build(input_size=48, d_max=7.0)


def test_repr_names_the_options():
    text = repr(build(depth_unit='node_size', levels_per_octave=2,
                      boundary='subtree'))
    assert ("depth_unit='node_size', levels_per_octave=2.0, "
            "boundary='subtree'") in text


def test_subtree_order_with_scores_drawn_beforehand():
    # the transform draws the level scores per image; given, they are used
    # exactly as the ones subtree_order draws itself
    ancestors = torch.stack([torch.arange(8) >> s for s in range(4)])
    ancestors = ancestors[None].expand(3, 4, 8)
    noise = torch.rand(3, 8, generator=torch.Generator().manual_seed(0))
    level = torch.tensor([3, 2, 1])
    drawn = subtree_order(ancestors, level, noise,
                          torch.Generator().manual_seed(1))
    scores = torch.rand(3, 2, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(subtree_order(ancestors, level, noise, scores=scores),
                       drawn)
    with pytest.raises(ValueError, match=r'scores must have shape \[3, 2, 8'):
        subtree_order(ancestors, level, noise, scores=scores[:, :1])
