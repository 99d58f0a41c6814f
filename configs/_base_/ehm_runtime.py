# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# What every ehm_mm config adds to the runtime of the recipe it inherits:
# the import that registers ehm_mm's modules, and the checkpoint hook a
# config puts in place of the recipe's with
#   default_hooks = dict(checkpoint=_base_.ehm_checkpoint_hook)
# (the recipe's interval and max_keep_ckpts stay).
custom_imports = dict(imports=['ehm_mm'], allow_failed_imports=False)

# Checkpoints written to a temporary file, fsynced and renamed; old ones
# deleted only afterwards.
ehm_checkpoint_hook = dict(type='AtomicCheckpointHook')
