# Copyright (c) OpenMMLab. All rights reserved.
from .ehm_mae import EHMMAE

__all__ = ['EHMMAE']
