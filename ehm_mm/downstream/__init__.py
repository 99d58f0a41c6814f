# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Transfer of EHM-pretrained encoders to downstream tasks.

This package is torch-only; ``import ehm_mm`` does not import it. The
library-specific parts live in subpackages that configs pull in with
``custom_imports``:

- ``ehm_mm.downstream.mmseg``: ``StrictMAE``, mmseg's MAE backbone with
  complete key accounting when it loads a pretrained encoder.
- ``ehm_mm.downstream.mmdet``: the ViTDet pieces mmdet's pip package lacks
  (``ViTDetBackbone``, ``SimpleFPN``, ``LN2d`` and a layer-decay optimizer
  constructor).

ImageNet fine-tuning and linear probing need nothing from here: mmpretrain's
``VisionTransformer`` has the same key layout as the pretraining backbone.
"""
from .encoder_checkpoint import (
                                 ENCODER_PREFIXES,
                                 ExtractedEncoder,
                                 extract_encoder,
                                 infer_vit_arch,
                                 load_encoder,
                                 mmpretrain_to_timm,
                                 timm_to_mmpretrain,
)
from .key_accounting import (
                                 KeyReport,
                                 account_keys,
                                 check_key_report,
                                 load_state_dict_accounted,
)

__all__ = [
    'ENCODER_PREFIXES', 'ExtractedEncoder', 'KeyReport', 'account_keys',
    'check_key_report', 'extract_encoder', 'infer_vit_arch',
    'load_encoder', 'load_state_dict_accounted', 'mmpretrain_to_timm',
    'timm_to_mmpretrain'
]
