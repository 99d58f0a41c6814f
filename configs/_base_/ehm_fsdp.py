# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# Sharded EHM-MAE pretraining with FSDP2 (docs/en/fsdp.md). A config
# inherits it after its recipe and replaces the recipe's AmpOptimWrapper
# by a NonFiniteSkipOptimWrapper (the wrapper's mixed precision computes
# in bf16: no autocast, no loss scaler). Launch with tools/dist_train.sh
# or tools/slurm_train.sh; a single-process launch is refused.

# Gathers the whole model and optimizer state on every rank before rank 0
# saves, so checkpoints are the unsharded model's.
runner_type = 'FSDP2Runner'
model_wrapper_cfg = dict(
    type='FSDP2Wrapper',
    # bf16 gathered parameters and compute, fp32 gradient reduce-scatter;
    # shards and optimizer state stay fp32.
    mixed_precision=dict(param_dtype='bfloat16', reduce_dtype='float32'),
    # True recomputes each block's activations in the backward.
    activation_checkpointing=False,
    reshard_after_forward=True)
