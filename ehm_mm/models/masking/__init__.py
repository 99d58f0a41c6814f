# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Evolved Hierarchical Masking and the other mask sources.

* ``hierarchy.py``: Adaptive Hierarchy Establishment (AHE), the per-image
  binary trees over the patches (torch only), and their options
  (``TreeOptions``); ``tree_level.py`` one level of it (match, merge),
  ``affinity_norm.py`` what it does to the affinity first;
* ``depth_schedule.py``: the masking depth over training and its
  stochastic rounding;
* ``mask_spec.py``: what a masking is, ``MaskSpec``, validated once;
* ``evolved_masking.py``: Evolved Mask Generation (EMG): ``cut_masks``,
  the one path from a tree to masks, and the registered
  ``EvolvedHierarchicalMasking`` module;
* ``mask_source.py``: ``MaskSource``, the interface every mask source
  implements, and its result, ``MaskingResult``;
* ``control_masking.py``: the masking study's controls (block-wise and
  random-hierarchy masks), which read no image;
* ``shuffled_masking.py``: EHM's masks cut from another image's tree of
  the batch (shuffled attention, the study's content control);
* ``color_noise_masking.py``: ColorMAE's data-independent masks, filtered
  random noise thresholded per image;
* ``mask_statistics.py``: the sizes of the pieces a source masks (node,
  level and connected-region sizes), for size-matched study arms;
* ``affinity.py``: the patch affinity from a ViT teacher's attention;
* ``pixel_affinity.py``: a patch affinity from the image's own low-level
  cues (mean colour, gradient texture), for the data pipeline's masks and
  ``EHMMAE`` / ``EHMSimMIM`` with ``affinity_source='pixels'``.
"""
from .affinity import attention_affinity, install_readouts
from .color_noise_masking import ColorNoiseMasking
from .control_masking import (
    BlockwiseMasking,
    RandomHierarchyMasking,
    beit_block_patches,
)
from .depth_schedule import DepthSchedule, stochastic_round
from .evolved_masking import (
    EvolvedHierarchicalMasking,
    cut_masks,
    mask_nodes,
)
from .hierarchy import Hierarchy, TreeOptions, build_hierarchy
from .mask_source import MaskingResult, MaskSource, split_shuffle
from .mask_spec import MaskSpec, check_mask_ratio
from .mask_statistics import (
    level_node_size,
    node_size_report,
    region_size,
)
from .pixel_affinity import cue_affinity, patch_cues, pixel_affinity
from .shuffled_masking import ShuffledAffinityMasking, roll_batch

__all__ = [
    'attention_affinity', 'install_readouts', 'check_mask_ratio',
    'build_hierarchy', 'Hierarchy', 'TreeOptions',
    'DepthSchedule', 'MaskSpec', 'EvolvedHierarchicalMasking', 'MaskSource',
    'MaskingResult', 'cut_masks', 'mask_nodes', 'split_shuffle',
    'stochastic_round', 'BlockwiseMasking', 'RandomHierarchyMasking',
    'patch_cues', 'cue_affinity', 'pixel_affinity', 'ShuffledAffinityMasking',
    'roll_batch', 'ColorNoiseMasking', 'beit_block_patches',
    'node_size_report', 'level_node_size', 'region_size'
]
