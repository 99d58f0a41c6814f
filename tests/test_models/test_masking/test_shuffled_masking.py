# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Shuffled attention: EHM's masks from another image's tree."""
import pytest
import torch
from mmpretrain.registry import MODELS

from ehm_mm.models.masking import (
    EvolvedHierarchicalMasking,
    ShuffledAffinityMasking,
    roll_batch,
)

OPTIONS = [
    dict(),
    dict(depth_unit='node_size'),
    dict(depth_unit='node_size', boundary='subtree',
         hierarchy_cfg=dict(tie_jitter=1e-3)),
]


def _pair(options: dict):
    cfg = dict(grid_size=(8, 8), mask_ratio=0.75, d_max=4., **options)
    shuffled = MODELS.build(dict(type='ShuffledAffinityMasking', **cfg))
    assert isinstance(shuffled, ShuffledAffinityMasking)
    return shuffled, EvolvedHierarchicalMasking(**cfg)


def test_roll_batch_is_a_derangement():
    affinity = torch.arange(5.)[:, None, None].expand(5, 3, 3)
    rolled = roll_batch(affinity)
    assert rolled[:, 0, 0].tolist() == [1., 2., 3., 4., 0.]


@pytest.mark.parametrize('options', OPTIONS)
def test_masks_are_ehm_masks_of_the_next_image(options, smooth_affinity):
    shuffled, ehm = _pair(options)
    affinity = smooth_affinity(5, 8, 8, seed=3)
    for kwargs in (dict(depth=[0, 1, 2, 3, 4]), dict(depth=2),
                   dict(progress=0.6)):
        got = shuffled(affinity, generator=torch.Generator().manual_seed(7),
                       **kwargs)
        # EHM on image i + 1's affinity at image i's place, same generator
        want = ehm(torch.cat([affinity[1:], affinity[:1]]),
                   generator=torch.Generator().manual_seed(7), **kwargs)
        for name in ('mask', 'ids_restore', 'ids_keep', 'depth',
                     'node_size', 'nonfinite'):
            assert torch.equal(getattr(got, name), getattr(want, name)), name
        assert torch.equal(got.hierarchy.ancestors, want.hierarchy.ancestors)
        assert bool((got.mask.sum(1) == 48).all())
        # not EHM's own masks: image i is not cut from its own tree
        own = ehm(affinity, generator=torch.Generator().manual_seed(7),
                  **kwargs)
        if 'progress' in kwargs or kwargs['depth'] != 0:
            assert not torch.equal(got.mask, own.mask)


@pytest.mark.parametrize('options', OPTIONS[:2])
def test_the_same_trees_permuted(options, smooth_affinity):
    shuffled, ehm = _pair(options)
    affinity = smooth_affinity(6, 8, 8, seed=4)
    tree = shuffled.hierarchy(affinity)
    own = ehm.hierarchy(affinity)
    # the tree that made the masks is the next image's
    assert torch.equal(tree.ancestors, own.ancestors.roll(-1, 0))
    assert torch.equal(tree.num_nodes, own.num_nodes.roll(-1, 0))
    # so at one depth the levels cut and their node sizes are EHM's,
    # permuted: the same statistics over the batch
    gen = torch.Generator().manual_seed(0)
    got = shuffled(affinity, depth=3, generator=gen)
    want = ehm(affinity, depth=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got.depth, want.depth.roll(-1, 0))
    level_size = got.hierarchy.num_nodes.gather(1, got.depth[:, None])
    ehm_size = want.hierarchy.num_nodes.gather(1, want.depth[:, None])
    assert torch.equal(level_size.sort(0).values, ehm_size.sort(0).values)


def test_nonfinite_affinity_flags_the_image_that_takes_its_tree(
        smooth_affinity):
    shuffled, _ = _pair(dict())
    affinity = smooth_affinity(3, 8, 8).clone()
    affinity[2, 0, 1] = float('nan')  # image 1 takes image 2's tree
    out = shuffled(affinity, depth=2,
                   generator=torch.Generator().manual_seed(0))
    assert out.nonfinite.tolist() == [False, True, False]
    assert out.depth.tolist()[1] == 0


def test_a_batch_of_one_fails_clearly(smooth_affinity):
    shuffled, _ = _pair(dict())
    one = smooth_affinity(1, 8, 8)
    for call in (lambda: shuffled(one, depth=2),
                 lambda: shuffled(None, depth=[0]),
                 lambda: shuffled.hierarchy(one)):
        with pytest.raises(ValueError, match='at least 2 images'):
            call()
    # depth 0 without an affinity (MAE masks) works for a real batch
    out = shuffled(None, depth=[0, 0])
    assert bool((out.mask.sum(1) == 48).all())
