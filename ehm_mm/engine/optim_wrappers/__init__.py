# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .nonfinite_skip_optim_wrapper import (
    NonFiniteSkipAmpOptimWrapper,
    NonFiniteSkipMixin,
    NonFiniteSkipOptimWrapper,
)

__all__ = [
    'NonFiniteSkipAmpOptimWrapper', 'NonFiniteSkipMixin',
    'NonFiniteSkipOptimWrapper'
]
