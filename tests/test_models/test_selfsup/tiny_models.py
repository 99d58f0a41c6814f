# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""The tiny EHM models of the self-supervised tests, and their builder.

EHM-MAE: 32 x 32 images, 8 px patches (a 4 x 4 grid), a 2-layer 48-d ViT,
a 1-layer decoder, EHM masks up to level 3 and an EMA teacher with a fast
momentum. EHM-SimMIM: a 1-block-per-stage Swin at 128 px (32 px mask
patches, a 4 x 4 mask grid over 32 x 32 tokens) and a 2-layer 32-d
``MaskFeatViT`` at 64 px (8 px patches and mask patches, an 8 x 8 grid),
masks at ratio 0.6 up to level 3.
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
SIMMIM_L1 = dict(type='PixelReconstructionLoss', criterion='L1', channel=3)
TINY_EHM_SIMMIM_SWIN = dict(
    type='EHMSimMIM',
    backbone=dict(
        type='SimMIMSwinTransformer',
        arch=dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2]),
        img_size=128,
        stage_cfgs=dict(block_cfgs=dict(window_size=4))),
    neck=dict(type='SimMIMLinearDecoder', in_channels=128, encoder_stride=32),
    head=dict(type='SimMIMHead', patch_size=4, loss=SIMMIM_L1),
    masking=dict(type='EvolvedHierarchicalMasking', mask_ratio=0.6,
                 d_max=3.0),
    ema_momentum=0.5)
TINY_EHM_SIMMIM_VIT = dict(
    type='EHMSimMIM',
    backbone=dict(
        type='MaskFeatViT',
        arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                  feedforward_channels=64),
        img_size=64,
        patch_size=8),
    neck=dict(type='SimMIMLinearDecoder', in_channels=32, encoder_stride=8),
    head=dict(type='SimMIMHead', patch_size=8, loss=SIMMIM_L1),
    mask_patch_size=8,
    masking=dict(type='EvolvedHierarchicalMasking', mask_ratio=0.6,
                 d_max=3.0),
    ema_momentum=0.5)


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
