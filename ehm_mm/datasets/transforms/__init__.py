# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .load_object_mask import LoadObjectMask

__all__ = ['LoadObjectMask']
