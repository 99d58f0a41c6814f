# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .evolved_hierarchical_mask_generator import (
    EvolvedHierarchicalMaskGenerator,
    SharedProgress,
    cue_affinity,
    patch_cues,
)
from .knn_bank_flag import SetKNNBankFlag
from .load_label_map import LoadLabelMap
from .load_object_mask import LoadObjectMask

__all__ = [
    'LoadObjectMask', 'LoadLabelMap', 'EvolvedHierarchicalMaskGenerator',
    'SharedProgress', 'cue_affinity', 'patch_cues', 'SetKNNBankFlag'
]
