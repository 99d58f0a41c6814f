# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The MaskSource interface: what every mask source implements."""
import pytest
import torch

import ehm_mm  # noqa: F401
from ehm_mm.models.masking import (
    BlockwiseMasking,
    EvolvedHierarchicalMasking,
    MaskSource,
    RandomHierarchyMasking,
)


def test_the_interface_is_declared_and_enforced():
    for source in (EvolvedHierarchicalMasking, BlockwiseMasking,
                   RandomHierarchyMasking):
        assert issubclass(source, MaskSource)
    assert EvolvedHierarchicalMasking.requires_affinity
    assert not BlockwiseMasking.requires_affinity
    assert not RandomHierarchyMasking.requires_affinity

    class Incomplete(MaskSource):

        def make_masks(self, *args):
            pass

    with pytest.raises(TypeError, match='hierarchy'):
        Incomplete((4, 4))


@pytest.mark.parametrize('masking', [
    BlockwiseMasking((6, 6)),
    RandomHierarchyMasking((6, 6), d_max=3.0),
], ids=['block', 'random_tree'])
def test_hierarchy_is_the_tree_that_made_the_masks(masking):
    out = masking(None, depth=[2, 3, 1],
                  generator=torch.Generator().manual_seed(4))
    tree = masking.hierarchy(batch_size=3,
                             generator=torch.Generator().manual_seed(4))
    levels = out.hierarchy.num_levels
    assert torch.equal(tree.ancestors[:, :levels], out.hierarchy.ancestors)
