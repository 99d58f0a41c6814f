# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Trees and masks are the same as before core v2, for the same inputs.

``tests/data/masking_reference.pt`` holds the trees and masks that the code
of commit 642a663 (before the core rewrite) computed for the four inputs
below: ``build_hierarchy`` with the given options, then the patch values
``torch.rand(B, N)`` and the depth rounding ``torch.rand(B)`` from one
seeded generator, as ``EvolvedHierarchicalMasking.forward`` draws them.
The inputs are built from integers or elementwise arithmetic only, so they
are bitwise the same on every machine.
"""
import os.path as osp

import pytest
import torch
from mmpretrain.registry import MODELS

import ehm_mm  # noqa: F401
from ehm_mm import build_hierarchy

REFERENCE = osp.join(
    osp.dirname(__file__), '..', '..', 'data', 'masking_reference.pt')


def integer_smooth(batch: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Dot products of 3 x 3 box sums of integer features (exact)."""
    gen = torch.Generator().manual_seed(seed)
    feat = torch.randint(-50, 51, (batch, 8, h + 2, w + 2),
                         generator=gen).double()
    feat = sum(feat[:, :, i:i + h, j:j + w] for i in range(3)
               for j in range(3))
    feat = feat.flatten(2).transpose(1, 2)
    return (feat @ feat.transpose(1, 2)).float()


def quadrant(batch: int, size: int, noise: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    half = torch.arange(size) >= size // 2
    q = (half[:, None].long() * 2 + half[None, :].long()).flatten()
    block = (q[:, None] == q[None, :]).float()
    num = size * size
    return block + noise * torch.randn(batch, num, num, generator=gen)


def ties(batch: int, num: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 3, (batch, num, num), generator=gen).float()


CASES = {
    'smooth14': dict(affinity=lambda: integer_smooth(4, 14, 14, 0),
                     grid=(14, 14), cfg=dict(), ratio=0.75, d=(0.0, 5.0),
                     progress=0.5, depth=None, seed=0),
    'quadrant14': dict(affinity=lambda: quadrant(3, 14, 0.3, 1),
                       grid=(14, 14), cfg=dict(), ratio=0.75, d=(0.0, 5.0),
                       progress=None, depth=3, seed=1),
    'ties6': dict(affinity=lambda: ties(3, 36, 2), grid=(6, 6),
                  cfg=dict(rounds=2, tolerance=0.5), ratio=0.75,
                  d=(0.0, 3.0), progress=0.3, depth=None, seed=2),
    'smooth5x7': dict(affinity=lambda: integer_smooth(2, 5, 7, 3),
                      grid=(5, 7), cfg=dict(rounds=3, tolerance=2.0),
                      ratio=0.6, d=(1.0, 3.0), progress=0.75, depth=None,
                      seed=3),
}


@pytest.fixture(scope='module')
def reference() -> dict:
    return torch.load(REFERENCE)


@pytest.mark.parametrize('name', list(CASES))
def test_trees_and_masks_are_unchanged(name, reference):
    case, ref = CASES[name], reference[name]
    affinity = case['affinity']()
    tree = build_hierarchy(affinity, case['grid'], **case['cfg'])
    assert torch.equal(tree.ancestors, ref['ancestors'].long())
    assert torch.equal(tree.num_nodes, ref['num_nodes'].long())
    for compact in (False, True):
        static = build_hierarchy(affinity, case['grid'], num_levels=4,
                                 compact=compact, **case['cfg'])
        assert torch.equal(static.ancestors, ref['ancestors'][:, :5].long())
    masking = MODELS.build(
        dict(type='EvolvedHierarchicalMasking', grid_size=case['grid'],
             mask_ratio=case['ratio'], d_min=case['d'][0],
             d_max=case['d'][1], hierarchy_cfg=case['cfg']))
    gen = torch.Generator().manual_seed(case['seed'])
    if case['depth'] is None:
        out = masking(affinity, progress=case['progress'], generator=gen)
    else:
        out = masking(affinity, depth=case['depth'], generator=gen)
    assert torch.equal(out.depth, ref['depth'].long())
    assert torch.equal(out.mask, ref['mask'].float())
    assert torch.equal(out.ids_restore, ref['ids_restore'].long())
    levels = out.hierarchy.num_levels
    assert torch.equal(out.hierarchy.ancestors,
                       ref['ancestors'][:, :levels].long())
