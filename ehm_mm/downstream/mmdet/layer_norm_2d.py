# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Make ``norm_cfg=dict(type='LN2d')`` work in mmdet configs.

ViTDet normalises its pyramid and heads with a channel-wise LayerNorm on
(B, C, H, W) maps. mmpretrain has one (``LayerNorm2d``, registered as
``'LN2d'`` in mmpretrain's registry); mmdet's registry does not see it, so
the same class is registered there under the same name.
"""
from mmdet.registry import MODELS
from mmpretrain.models.utils import LayerNorm2d

if 'LN2d' not in MODELS.module_dict:
    MODELS.register_module(name='LN2d', module=LayerNorm2d)

__all__ = ['LayerNorm2d']
