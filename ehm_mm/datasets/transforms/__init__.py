# Copyright (c) OpenMMLab. All rights reserved.
from .load_object_mask import LoadObjectMask

__all__ = ['LoadObjectMask']
