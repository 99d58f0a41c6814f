# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .checkpoint_compat import register_checkpoint_safe_globals
from .checkpoint_loading import (
    CheckpointLoadError,
    load_local_checkpoint,
    register_checkpoint_loader,
)
from .config_package import register_config_package
from .scope_tolerant_collate import (
    ScopeTolerantCollate,
    register_scope_tolerant_collates,
)

__all__ = [
    'register_checkpoint_safe_globals', 'CheckpointLoadError',
    'load_local_checkpoint', 'register_checkpoint_loader',
    'register_config_package', 'ScopeTolerantCollate',
    'register_scope_tolerant_collates'
]
