# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .checkpoint_compat import register_checkpoint_safe_globals

__all__ = ['register_checkpoint_safe_globals']
