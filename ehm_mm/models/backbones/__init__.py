# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .ehm_mae_vit import EHMMAEViT

__all__ = ['EHMMAEViT']
