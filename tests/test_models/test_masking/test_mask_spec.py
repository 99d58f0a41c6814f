# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""MaskSpec and TreeOptions: one validated description of a masking."""
import dataclasses
import pickle

import pytest
import torch
from mmpretrain.registry import MODELS

import ehm_mm  # noqa: F401
from ehm_mm.models.masking import (
    DepthSchedule,
    Hierarchy,
    MaskSpec,
    TreeOptions,
    build_hierarchy,
    cut_masks,
)


def test_spec_is_frozen_comparable_and_picklable():
    spec = MaskSpec.create((4, 6), mask_ratio=0.5, d_max=3.0,
                           hierarchy_cfg=dict(rounds=2))
    assert spec.num_masked == 12 and spec.num_patches == 24
    assert spec.schedule == DepthSchedule(0.0, 3.0, 'linear')
    assert spec.tree == TreeOptions(rounds=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.num_masked = 3
    # equal by value: requests made in a worker compare equal after pickling
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert MaskSpec.create((4, 6), num_masking_patches=12, d_max=3.0,
                           hierarchy_cfg=dict(rounds=2)) == spec
    assert spec != MaskSpec.create((4, 6), mask_ratio=0.5, d_max=2.0)


def test_tree_options_are_validated_by_reading_them():
    assert TreeOptions().kwargs() == dict(
        rounds=4, tolerance=1.0, max_levels=None, compact=None,
        compile=False, affinity_norm='none', tolerance_scope='image',
        tie_jitter=0.0)
    for bad, name in ((dict(rounds=0), 'rounds'),
                      (dict(tolerance=-1.0), 'tolerance'),
                      (dict(max_levels=-2), 'max_levels'),
                      (dict(affinity_norm='l2'), 'affinity_norm'),
                      (dict(tolerance_scope='pair'), 'tolerance_scope'),
                      (dict(tie_jitter=float('nan')), 'tie_jitter'),
                      (dict(compile=True, compact=True), 'compile')):
        with pytest.raises(ValueError, match=name):
            TreeOptions(**bad)
    with pytest.raises(ValueError, match=r"unknown keys \['round'\]"):
        TreeOptions.from_cfg(dict(round=2))


def test_spec_validation_runs_no_tree(monkeypatch):
    # validation reads values: building a masking never builds a tree
    calls = []
    monkeypatch.setattr(ehm_mm.models.masking.evolved_masking,
                        'build_hierarchy',
                        lambda *a, **k: calls.append(a))
    MODELS.build(dict(type='EvolvedHierarchicalMasking', grid_size=(6, 6),
                      d_max=3.0, hierarchy_cfg=dict(rounds=2)))
    MaskSpec.create((6, 6), d_max=3.0, hierarchy_cfg=dict(tolerance=0.5))
    assert calls == []


@pytest.mark.parametrize('kwargs, match', [
    (dict(d_max=4.0), r'd_max=4 reaches depth 4, beyond the height 3 that '
     r'every tree over a 2x4 patch grid reaches \(ceil\(log2 8\)\)'),
    (dict(d_max=3.0, hierarchy_cfg=dict(max_levels=2)),
     r'beyond the height 2 .*hierarchy_cfg.max_levels'),
    (dict(d_max=3.5, d_min=4.0, schedule='cosine'), 'lower d_min'),
    (dict(d_max=4.0, depth_unit='node_size'), 'limit depth 3'),
    (dict(d_max=3.1, depth_unit='node_size'), r'nodes of 16 patches'),
])
def test_the_schedule_must_fit_the_trees(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MaskSpec.create((2, 4), **kwargs)


def test_tree_levels_follow_the_depth_unit():
    level = MaskSpec.create((8, 8), d_max=4.0)
    assert [level.tree_levels(d) for d in (0, 1, 4)] == [0, 1, 4]
    size = MaskSpec.create((8, 8), d_max=4.0, depth_unit='node_size',
                           levels_per_octave=2.5)
    assert [size.tree_levels(d) for d in (0, 1, 4)] == [0, 3, 10]
    assert size.tree_levels(6) == 12  # capped at 2 * ceil(log2 64)
    capped = MaskSpec.create((8, 8), d_max=4.0, depth_unit='node_size',
                             hierarchy_cfg=dict(max_levels=5))
    assert capped.tree_levels(4) == 5


def test_cut_masks_is_the_module_path(smooth_affinity):
    # the module's forward is: noise, depths, trees, then cut_masks
    masking = MODELS.build(dict(type='EvolvedHierarchicalMasking',
                                grid_size=(8, 8), d_max=4.0,
                                boundary='subtree'))
    affinity = smooth_affinity(3, 8, 8)
    out = masking(affinity, depth=[1, 2, 4],
                  generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    noise = torch.rand(3, 64, generator=gen)
    tree = build_hierarchy(affinity, (8, 8), num_levels=4)
    again = cut_masks(tree, torch.tensor([1, 2, 4]), noise, masking.spec,
                      generator=gen)
    for name in ('mask', 'ids_restore', 'ids_keep', 'depth', 'node_size'):
        assert torch.equal(getattr(out, name), getattr(again, name)), name
    # depth 0 on the leaves: MAE's random masks
    leaves = Hierarchy.leaves(3, (8, 8))
    zero = cut_masks(leaves, torch.zeros(3, dtype=torch.long), noise,
                     masking.spec)
    assert torch.equal(zero.ids_keep, torch.argsort(noise, 1)[:, :16])
    assert torch.equal(zero.node_size, torch.ones(3))
