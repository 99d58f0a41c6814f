# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .checkpoint_compat import register_checkpoint_safe_globals
from .checkpoint_loading import (
    CheckpointLoadError,
    load_local_checkpoint,
    register_checkpoint_loader,
)

__all__ = [
    'register_checkpoint_safe_globals', 'CheckpointLoadError',
    'load_local_checkpoint', 'register_checkpoint_loader'
]
