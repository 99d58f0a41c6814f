# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Evolved Hierarchical Masking, in three files.

* ``hierarchy.py``: Adaptive Hierarchy Establishment (AHE), the per-image
  binary trees over the patches (torch only);
* ``evolved_masking.py``: Evolved Mask Generation (EMG), the depth schedule,
  node masking and the registered ``EvolvedHierarchicalMasking`` module;
* ``affinity.py``: the patch affinity from a ViT teacher's attention;
* ``pixel_affinity.py``: a patch affinity from the image's own low-level
  cues (mean colour, gradient texture), for the data pipeline's masks and
  ``EHMMAE`` / ``EHMSimMIM`` with ``affinity_source='pixels'``.

``control_masking.py`` holds the masking study's controls (block-wise and
random-hierarchy masks), which read no image.
"""
from .affinity import attention_affinity
from .control_masking import BlockwiseMasking, RandomHierarchyMasking
from .evolved_masking import (
    DepthSchedule,
    EvolvedHierarchicalMasking,
    MaskingResult,
    mask_nodes,
    stochastic_round,
)
from .hierarchy import Hierarchy, build_hierarchy
from .pixel_affinity import cue_affinity, patch_cues, pixel_affinity

__all__ = [
    'attention_affinity', 'build_hierarchy', 'Hierarchy', 'DepthSchedule',
    'EvolvedHierarchicalMasking', 'MaskingResult', 'mask_nodes',
    'stochastic_round', 'BlockwiseMasking', 'RandomHierarchyMasking',
    'patch_cues', 'cue_affinity', 'pixel_affinity'
]
