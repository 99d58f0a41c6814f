# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""mmdet modules for ViTDet-style transfer; registered into mmdet's registries.

mmdet's pip package does not ship ``projects/ViTDet``; these are the pieces
a Mask R-CNN with a plain ViT backbone needs. Import with
``custom_imports=dict(imports=['ehm_mm.downstream.mmdet'],
allow_failed_imports=False)`` in an mmdet config.
"""
from .layer_decay_optim_constructor import (
    BackboneLayerDecayOptimWrapperConstructor,
)
from .layer_norm_2d import LayerNorm2d
from .simple_fpn import SimpleFPN
from .vitdet_backbone import ViTDetBackbone, ViTDetEncoderLayer

__all__ = [
    'BackboneLayerDecayOptimWrapperConstructor', 'LayerNorm2d', 'SimpleFPN',
    'ViTDetBackbone', 'ViTDetEncoderLayer'
]
