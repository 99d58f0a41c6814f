# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# The controlled masking study (docs/en/masking_study.md): the CPU demo's
# small ViT pretrained on SyntheticScenes (several two-part objects,
# occlusion, varied scale) under different masks, all else equal.
#
#   python tools/analysis/masking_study.py configs/study/masking_study_scenes.py \
#       --out work_dirs/masking_study --seeds 0 1 2 3 --jobs 2
#
# `study_arms` maps an arm name to config overrides merged into this config
# (mmengine's merge, `_delete_=True` replaces a dict); add your own arms in a
# config that inherits this one. `study_baseline` is the arm the paired
# differences are taken against. `study_quick` is merged on top for
# `--quick` (the smoke test).
_base_ = '../ehm_mae_vit-tiny_demo.py'

data_root = 'data/synthetic_scenes'

model = dict(predict_patch_features=True)

# The demo's train_pipeline (64 px crops and flips) and this pipeline for
# validation: object masks for the probes and the label map for the
# patch-segmentation probe.
val_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadObjectMask'),
    dict(type='LoadLabelMap'),
    dict(type='PackInputs', algorithm_keys=['gt_object_mask', 'gt_seg_map'])
]
# Both loaders read SyntheticScenes in the main process.
_loader = dict(num_workers=0, persistent_workers=False)
_scenes = dict(type='SyntheticScenes', data_root=data_root)
train_dataloader = dict(
    _loader,
    batch_size=32,
    dataset=dict(_scenes, num_samples=1024, pipeline=_base_.train_pipeline))
val_dataloader = dict(
    _loader,
    batch_size=120,
    dataset=dict(_scenes, num_samples=480, pipeline=val_pipeline))
val_evaluator = [
    dict(type='HierarchyIoU'),
    dict(type='KNNAccuracy', k=20),
    dict(type='LinearProbeAccuracy'),
    dict(type='PatchSegProbe', num_classes=7),
]
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# Budgeted for a shared 2-core CPU: 36 runs (9 arms x 4 seeds) in about an
# hour with --jobs 2: 160 iterations of batch 32 per run, validation after
# epochs 3 and 5.
max_epochs = 5
warmup_epochs = 1
optim_wrapper = dict(optimizer=dict(lr=1e-3))
# The demo's warm-up + cosine schedule with this budget's numbers.
param_scheduler = [
    dict(_base_.param_scheduler[0], end=warmup_epochs),
    dict(_base_.param_scheduler[1], begin=warmup_epochs, end=max_epochs,
         T_max=max_epochs - warmup_epochs)]
train_cfg = dict(max_epochs=max_epochs, val_interval=3)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=1, max_keep_ckpts=1))
# No validation before training: at epoch 0 every arm of a seed has the same
# (untrained) encoder.
custom_hooks = [
    dict(type='EvaluationSummaryHook', validate_before_train=False)
]

_ehm = dict(
    _delete_=True, type='EvolvedHierarchicalMasking', d_min=0.0, d_max=4.0)
study_baseline = 'mae'
study_arms = dict(
    # MAE random masking: EHM at depth 0 is MAE's mask, draw for draw.
    mae=dict(model=dict(masking=dict(_ehm, d_max=0.0))),
    # BEiT/SimMIM-style random blocks, same exact ratio.
    block=dict(model=dict(
        masking=dict(_delete_=True, type='BlockwiseMasking'))),
    # EHM's trees and linear depth schedule on a content-free affinity.
    random_hier_linear=dict(
        model=dict(masking=dict(_ehm, type='RandomHierarchyMasking'))),
    # EHM at a fixed depth (no evolution).
    ehm_const2=dict(
        model=dict(masking=dict(_ehm, schedule='constant', d_max=2.0))),
    ehm_const4=dict(model=dict(masking=dict(_ehm, schedule='constant'))),
    # EHM evolving from depth 0 to 4, each shipped schedule.
    ehm_linear=dict(model=dict(masking=dict(_ehm, schedule='linear'))),
    ehm_cosine=dict(model=dict(masking=dict(_ehm, schedule='cosine'))),
    ehm_sqrt=dict(model=dict(masking=dict(_ehm, schedule='sqrt'))),
    ehm_step=dict(model=dict(masking=dict(_ehm, schedule='step'))),
    # Calibration options (issue 12), each on top of ehm_linear alone.
    # Teacher half-life as a fraction of the run instead of a per-iteration
    # momentum (the demo's 0.01 is a half-life of 69 iterations).
    ehm_halflife_0p5=dict(
        model=dict(
            ema_momentum=None,
            ema_half_life=0.5,
            masking=dict(_ehm, schedule='linear'))),
    # Degree-normalised affinity D^-1/2 S D^-1/2.
    ehm_norm_degree=dict(
        model=dict(
            masking=dict(
                _ehm, hierarchy_cfg=dict(affinity_norm='degree')))),
    # Cosine of the attention profiles (rows) as the affinity.
    ehm_norm_profile=dict(
        model=dict(
            masking=dict(
                _ehm, hierarchy_cfg=dict(affinity_norm='profile')))),
    # The boundary guard's spread measured per tree level.
    ehm_tol_level=dict(
        model=dict(
            masking=dict(
                _ehm, hierarchy_cfg=dict(tolerance_scope='level')))),
    # Seeded tie-breaking jitter instead of the pair-id order.
    ehm_tie_jitter=dict(
        model=dict(
            masking=dict(_ehm, hierarchy_cfg=dict(tie_jitter=1e-6)))),
    # Depth in node sizes: d -> the level whose mean node is closest to
    # 2**d patches; d_max=2 gives deepest masks of ~4-patch nodes, as
    # level 4 does with a random-init teacher on this grid.
    ehm_node_size=dict(
        model=dict(
            masking=dict(_ehm, depth_unit='node_size', d_max=2.0))),
    # The split boundary node masked along its own subtree.
    ehm_boundary_subtree=dict(
        model=dict(masking=dict(_ehm, boundary='subtree'))),
    # ehm_linear's trees and schedule on a low-level pixel affinity (mean
    # colour + gradient texture per patch, `cue_affinity`) instead of the
    # teacher's attention; no teacher is built. Between the two controls
    # of (a): attention tree vs pixel tree vs content-free tree.
    ehm_pixel_linear=dict(
        model=dict(
            affinity_source='pixels',
            masking=dict(_ehm, schedule='linear'))),
)
# Planned comparisons (paired over seeds; a group is averaged per seed):
# (a) the attention-derived tree vs a content-free tree, same schedule;
# (b) evolving vs fixed depth; the paper's Fig. 2(a) block vs random.
study_contrasts = [
    dict(
        name='(a) attention tree vs random tree',
        arms=['ehm_linear'],
        reference=['random_hier_linear']),
    dict(
        name='(b) evolving vs constant depth',
        arms=['ehm_linear', 'ehm_cosine', 'ehm_sqrt', 'ehm_step'],
        reference=['ehm_const2', 'ehm_const4']),
    dict(
        name='(b) linear 0->4 vs constant 4',
        arms=['ehm_linear'],
        reference=['ehm_const4']),
    dict(name='block vs random', arms=['block'], reference=['mae']),
    dict(
        name="(a') attention tree vs pixel tree",
        arms=['ehm_linear'],
        reference=['ehm_pixel_linear']),
    dict(
        name='pixel tree vs random tree',
        arms=['ehm_pixel_linear'],
        reference=['random_hier_linear']),
] + [
    dict(name=f'{arm} vs ehm_linear', arms=[arm], reference=['ehm_linear'])
    for arm in ('ehm_halflife_0p5', 'ehm_norm_degree', 'ehm_norm_profile',
                'ehm_tol_level', 'ehm_tie_jitter', 'ehm_node_size',
                'ehm_boundary_subtree')
]
# --quick: 2 arms, a few iterations, a small validation set.
study_quick = dict(
    arms=['mae', 'ehm_linear'],
    overrides=dict(
        train_dataloader=dict(batch_size=16, dataset=dict(num_samples=32)),
        val_dataloader=dict(batch_size=24, dataset=dict(num_samples=24)),
        train_cfg=dict(max_epochs=2, val_interval=1),
        default_hooks=dict(checkpoint=dict(interval=1)),
        param_scheduler=[
            dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0)
        ]))
