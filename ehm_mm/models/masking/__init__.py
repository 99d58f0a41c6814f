# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Evolved Hierarchical Masking: affinity, hierarchy, depth and masks.

Everything here but :class:`EvolvedHierarchicalMasking` (the registered
mmpretrain module) and the affinity's fast path for mmpretrain's own
transformer layers depends on torch only.
"""
from .affinity import attention_affinity, layer_attention, resolve_layers
from .depth_schedule import SCHEDULES, DepthSchedule, stochastic_round
from .evolved_masking import EvolvedHierarchicalMasking
from .hierarchy import (
    Hierarchy,
    build_hierarchy,
    check_affinity,
    check_grid_size,
    default_max_levels,
    grid_edges,
    min_tree_height,
    nonfinite_images,
)
from .node_masking import MaskingResult, mask_nodes, num_masked

__all__ = [
    'attention_affinity', 'layer_attention', 'resolve_layers', 'SCHEDULES',
    'DepthSchedule', 'stochastic_round', 'EvolvedHierarchicalMasking',
    'Hierarchy', 'build_hierarchy', 'check_affinity', 'check_grid_size',
    'default_max_levels', 'grid_edges', 'min_tree_height',
    'nonfinite_images', 'MaskingResult', 'mask_nodes', 'num_masked'
]
