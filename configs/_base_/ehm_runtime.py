# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# What every ehm_mm config adds to the runtime of the recipe it inherits:
# the import that registers ehm_mm's modules, the checkpoint hook a config
# puts in place of the recipe's, and the divergence guard, with
#   optim_wrapper = dict(type='NonFiniteSkipAmpOptimWrapper')  # or
#                   # 'NonFiniteSkipOptimWrapper' for an OptimWrapper recipe
#   default_hooks = dict(
#       checkpoint=_base_.ehm_checkpoint_hook,
#       divergence_guard=_base_.ehm_divergence_guard_hook)
# (the recipe's interval and max_keep_ckpts stay).
custom_imports = dict(imports=['ehm_mm'], allow_failed_imports=False)

# Checkpoints written to a temporary file, fsynced and renamed; old ones
# deleted only afterwards.
ehm_checkpoint_hook = dict(type='AtomicCheckpointHook')

# A non-finite loss skips its optimizer step (the NonFiniteSkip* optimizer
# wrappers); this many in a row stop training with an error naming the
# last good checkpoint (docs/en/reliability.md).
ehm_divergence_guard_hook = dict(
    type='DivergenceGuardHook', max_consecutive_nonfinite=3)
