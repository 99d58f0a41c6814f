# Copyright (c) OpenMMLab. All rights reserved.
from .ehm_mae_vit import EHMMAEViT

__all__ = ['EHMMAEViT']
