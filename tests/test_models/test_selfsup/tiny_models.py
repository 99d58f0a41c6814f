# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The tiny EHM-MAE of the self-supervised tests, and their model builder.

32 x 32 images, 8 px patches (a 4 x 4 grid), a 2-layer 48-d ViT, a 1-layer
decoder, EHM masks up to level 3 and an EMA teacher with a fast momentum.
"""
import copy

import torch
from mmpretrain.registry import MODELS

TINY_ARCH = dict(
    embed_dims=48, num_layers=2, num_heads=3, feedforward_channels=96)
TINY_EHM_MAE = dict(
    type='EHMMAE',
    backbone=dict(
        type='EHMMAEViT', arch=TINY_ARCH, img_size=32, patch_size=8,
        mask_ratio=0.75),
    neck=dict(
        type='MAEPretrainDecoder',
        num_patches=16,
        patch_size=8,
        in_chans=3,
        embed_dim=48,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=2,
        mlp_ratio=2.),
    head=dict(
        type='MAEPretrainHead',
        norm_pix=True,
        patch_size=8,
        loss=dict(type='PixelReconstructionLoss', criterion='L2')),
    masking=dict(type='EvolvedHierarchicalMasking', d_min=0., d_max=3.),
    teacher='ema',
    ema_momentum=0.25)


def build_tiny(base: dict, **changes) -> torch.nn.Module:
    """Build a model config with top-level keys replaced, from seed 0.

    Args:
        base (dict): The model config (e.g. :data:`TINY_EHM_MAE`); not
            modified.
        **changes: Top-level keys that replace the config's.

    Returns:
        torch.nn.Module: The model after ``init_weights()``, with the
        global torch seed set to 0 before it was built.
    """
    cfg = copy.deepcopy(base)
    cfg.update(changes)
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model
