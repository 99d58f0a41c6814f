# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Transfer of EHM-pretrained encoders to downstream tasks.

This package is torch-only; ``import ehm_mm`` does not import it. It holds
the one place where encoder weights are read out of a checkpoint
(``encoder_checkpoint``) and checked key by key (``key_accounting``); the
retrieval benchmarks, the converters and the downstream backbones all load
through it. The library-specific parts live in subpackages that configs pull
in with ``custom_imports``:

- ``ehm_mm.downstream.mmseg``: ``StrictMAE``, mmseg's MAE backbone with
  complete key accounting when it loads a pretrained encoder.
- ``ehm_mm.downstream.mmdet``: the ViTDet pieces mmdet's pip package lacks
  (``ViTDetBackbone``, ``SimpleFPN``, ``LN2d`` and a layer-decay optimizer
  constructor).

ImageNet fine-tuning and linear probing need nothing from here: mmpretrain's
``VisionTransformer`` has the same key layout as the pretraining backbone.
"""
from .encoder_checkpoint import *  # noqa: F401,F403
from .key_accounting import *  # noqa: F401,F403
