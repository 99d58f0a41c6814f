# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
from .fsdp2_wrapper import (
    FSDP2Wrapper,
    check_sharded_launch,
    check_sharded_precision,
    uses_fsdp2,
)
from .sharded_state import (
    gather_full_tensors,
    register_full_optim_state_hooks,
    register_full_state_dict_hooks,
    shard_like,
)

__all__ = [
    'FSDP2Wrapper', 'check_sharded_launch', 'check_sharded_precision',
    'uses_fsdp2',
    'gather_full_tensors', 'register_full_optim_state_hooks',
    'register_full_state_dict_hooks', 'shard_like'
]
