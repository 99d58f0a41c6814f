# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# What EHM adds to an mmpretrain MAE recipe, in one place. A pretraining
# config inherits the MAE recipe it follows and this file, then sets
#   model = _base_.ehm_mae_model
# so that schedules, data and runtime stay exactly mmpretrain's.
_base_ = './ehm_runtime.py'

# Merged into the recipe's MAE model: the encoder keeps MAEViT's arch and
# state-dict keys.
ehm_mae_model = dict(
    type='EHMMAE',
    # Same encoder as MAEViT (same state-dict keys); it takes its mask
    # from the EHM generator instead of drawing it.
    backbone=dict(type='EHMMAEViT'),
    # The one owner of the mask ratio (the backbone's is unused); the
    # patch grid comes from the backbone.
    masking=dict(
        type='EvolvedHierarchicalMasking',
        mask_ratio=0.75,
        d_min=0.0,  # patch level at the start: MAE random masking
        # Level 5 at the end: nodes of at most 32 patches, 4.9-5.4 on
        # average for a random-init ViT-B teacher (14 x 14), larger as it
        # trains (docs/en/design.md, section 3); depth_unit='node_size'
        # fixes the node size (2**d patches) instead of the level.
        d_max=5.0,
        schedule='linear'),
    teacher='ema',
    # teacher = (1 - m) * teacher + m * student every iteration: a half-life
    # of ln 2 / -ln(1 - m) = 17.3k iterations, whatever the run's length.
    # Or ema_momentum=None, ema_half_life=h: a half-life of h * max_iters
    # (docs/en/design.md, "Teacher timescale").
    ema_momentum=4e-5,
    # Affinity from all encoder layers. The cost knob: e.g. [0, 1, 2, 3]
    # (first 4 layers) measured 1.13x MAE's step time instead of 1.50x
    # (ViT-B, CPU; see docs/en/benchmarks_and_results.md).
    attn_layers=None)

# Masks of 4 fixed training images every 10 epochs (and before training),
# to every visualizer backend.
custom_hooks = [
    dict(type='HierarchyVisualizationHook', interval=10, num_images=4)
]

# Crops and flips seeded by (seed, epoch, rank, index, draw), so `--resume`
# is bit-exact with any number of data-loader workers; a config sets
#   train_dataloader = dict(sampler=_base_.ehm_train_sampler)
ehm_train_sampler = dict(
    _delete_=True,
    type='SeededAugmentSampler',
    sampler=dict(type='DefaultSampler', shuffle=True))
# Checkpoints and the divergence guard: a config sets
#   optim_wrapper = dict(type='NonFiniteSkip[Amp]OptimWrapper')
#   default_hooks = dict(checkpoint=_base_.ehm_checkpoint_hook,
#                        divergence_guard=_base_.ehm_divergence_guard_hook)
# (configs/_base_/ehm_runtime.py).
