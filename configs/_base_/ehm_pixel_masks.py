# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# What the pixel-cue arm of EHM adds to an mmpretrain MIM recipe, in one
# place: masks made in the data pipeline from each image's own patch cues
# (mean colour + gradient texture per mask patch), no teacher. A config
# inherits the recipe and this file, puts
#   dict(**_base_.ehm_pixel_mask_generator, <its grid, ratio and d_max>),
#   _base_.ehm_pixel_pack_inputs,
# at the end of the recipe's train pipeline and sets
#   train_dataloader = dict(sampler=_base_.ehm_train_sampler,
#                           collate_fn=_base_.ehm_mask_collate, ...)
#   optim_wrapper = dict(type='NonFiniteSkip[Amp]OptimWrapper')
#   default_hooks = dict(checkpoint=_base_.ehm_checkpoint_hook,
#                        divergence_guard=_base_.ehm_divergence_guard_hook)
# (configs/{mae,maskfeat,simmim}/*_ehm-pix_*.py).
_base_ = './ehm_runtime.py'

# What every pixel-cue config shares of the mask generator; the config adds
# the grid (input_size, mask_patch_size, model_patch_size), the masked share
# (mask_ratio or num_masking_patches) and the final depth d_max.
ehm_pixel_mask_generator = dict(
    type='EvolvedHierarchicalMaskGenerator',
    d_min=0.0,  # random masking at the start, as the recipe's own masks
    schedule='linear',
    # The transform computes the draws; the collate function below builds
    # the trees of the whole batch in one call (in the worker, 2-3x faster
    # than one image at a time, same masks).
    batched=True)
# The draws travel to the collate function as `mask_request`.
ehm_pixel_pack_inputs = dict(
    type='PackInputs', algorithm_keys=['mask_request'])
# `evolved_mask_collate` is `default_collate` plus the batch's masks
# (`_delete_` also drops the `_scope_` tag mmengine puts on dicts inherited
# through `mmpretrain::`, which `build_dataloader` would pass on).
ehm_mask_collate = dict(_delete_=True, type='evolved_mask_collate')

# mmpretrain's sampler, wrapped: crops, flips and mask draws seeded by
# (seed, epoch, rank, index, draw), and every sample knows the iteration it
# is used in, so its mask depth follows exactly iteration / max_iters
# (docs/en/simmim.md); `--resume` is bit-exact with any number of workers.
ehm_train_sampler = dict(
    _delete_=True,
    type='SeededAugmentSampler',
    sampler=dict(type='DefaultSampler', shuffle=True))

# Writes iter / max_iters into the mask generator of every dataloader
# worker (shared memory; persistent workers, DDP and --resume included),
# and the loop's constants for the exact progress of each sample.
custom_hooks = [dict(type='MaskProgressHook')]
