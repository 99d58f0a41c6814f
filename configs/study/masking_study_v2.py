# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# Masking study v2 (issue 22): a task colour cannot solve, size-matched
# tree arms, shuffled attention, content-free noise and scaled BEiT blocks,
# both trees and the mask-object alignment in the report. See
# docs/en/masking_study.md, section "v2". The main run (not run yet):
#
#   python tools/analysis/masking_study.py configs/study/masking_study_v2.py \
#       --out work_dirs/study_v2 --seeds $(seq 0 24) --jobs 1 --baselines \
#       --arms mae ehm_node_size shuffled_attention random_tree_node_size
#   python tools/analysis/masking_study.py configs/study/masking_study_v2.py \
#       --out work_dirs/study_v2 --seeds 0 1 2 3 --jobs 1 \
#       --arms pixel_tree_node_size colormae_green block_beit block
#
# (the primary arms at the registered 25 seeds, the exploratory ones at
# 4; see the pre-registration below)
#
# Data: SyntheticShapes with the class in the outline only. Object texture
# family and colours are random (class_appearance=False), every class has
# the same expected area (equal_area=True, so size is no cue either), and
# objects are large: radius 0.3-0.39 of the side before the per-class area
# scaling, 15.8 of the 64 patches on average, so the deepest masks
# (node size 2**4 = 16 patches) reach object size. Validation: 5000 query
# images (split 'val') and a separate k-NN bank of 2000 (split 'test').
#
# Tree arms mask by node size (depth_unit='node_size'), depth 0 -> 4: at
# training progress t every tree arm masks nodes of about 2**(4 t)
# patches, whatever tree it cuts (tests/test_tools/test_masking_study_v2.py
# checks that the arms' mean masked node sizes agree).
_base_ = './masking_study_shapes.py'

data_root = 'data/synthetic_shapes'
_task = dict(
    type='SyntheticShapes',
    data_root=data_root,
    class_appearance=False,
    object_radius=(0.3, 0.39),
    equal_area=True)
val_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadObjectMask'),
    dict(
        type='PackInputs',
        algorithm_keys=['gt_object_mask'],
        meta_keys=['sample_idx', 'img_path', 'ori_shape', 'img_shape',
                   'knn_bank'])
]
train_dataloader = dict(
    batch_size=32,
    dataset=dict(
        _delete_=True,
        num_samples=2048,
        split='train',
        pipeline=_base_.train_pipeline,
        **_task))
val_dataloader = dict(
    batch_size=250,
    dataset=dict(
        _delete_=True,
        type='ConcatDataset',
        datasets=[
            dict(num_samples=2000, split='test', knn_bank=True,
                 pipeline=val_pipeline, **_task),
            dict(num_samples=5000, split='val', pipeline=val_pipeline,
                 **_task),
        ]))
test_dataloader = val_dataloader
val_evaluator = [
    # Both trees (docs/en/masking_study.md, v2): the tree that made the
    # masks (hierarchy/best_iou) and the image's own tree from the model's
    # affinity (teacher_hierarchy/best_iou: the teacher's, the pixel tree
    # for the pixel arm). Arms whose masks are cut from the image's own tree
    # (mae, ehm_node_size, pixel_tree_node_size) write only the first; the
    # fallback scores it for the second too, as the two trees are the same.
    dict(type='HierarchyIoU'),
    dict(type='HierarchyIoU', ancestors_key='teacher_hierarchy_ancestors',
         fallback_key='hierarchy_ancestors', prefix='teacher_hierarchy'),
    dict(type='KNNBankAccuracy', k=20),
    dict(type='LinearProbeAccuracy'),
    dict(type='PatchSegProbe', num_classes=7, label_source='object_mask'),
]
test_evaluator = val_evaluator

# Pilot budget (docs/en/masking_study.md, v2 pilot): 10 epochs of 2048
# images at batch 32 (640 iterations), validation at the end only.
max_epochs = 10
warmup_epochs = 1
param_scheduler = [
    dict(_base_.param_scheduler[0], end=warmup_epochs),
    dict(_base_.param_scheduler[1], begin=warmup_epochs, end=max_epochs,
         T_max=max_epochs - warmup_epochs)]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)

_ehm = dict(
    _delete_=True,
    type='EvolvedHierarchicalMasking',
    d_min=0.0,
    d_max=4.0,
    schedule='linear',
    depth_unit='node_size')
study_baseline = 'mae'
# Every arm is the EHM arm with one thing changed (the mask source type,
# or the whole mask source for the content-free ones; tested in
# tests/test_tools/test_masking_study_v2.py).
study_arms = dict(
    _delete_=True,
    # MAE random masking: depth 0 is MAE's mask, draw for draw.
    mae=dict(model=dict(masking=dict(_ehm, d_max=0.0))),
    # EHM: the teacher's attention tree, nodes of 1 -> 16 patches.
    ehm_node_size=dict(model=dict(masking=dict(_ehm))),
    # EHM's masks cut from the teacher's tree of another image of the batch
    # (image i + 1's): EHM's tree statistics, the wrong image. Needs batches
    # of at least 2 images: every loader here divides its dataset exactly
    # (2048 / 32, 7000 / 250; quick 32 / 16, 48 / 24), so none has a batch
    # of 1 (checked in the test).
    shuffled_attention=dict(
        model=dict(masking=dict(_ehm, type='ShuffledAffinityMasking'))),
    # The same node sizes cut from trees of i.i.d. noise.
    random_tree_node_size=dict(
        model=dict(masking=dict(_ehm, type='RandomHierarchyMasking'))),
    # The same node sizes cut from the pixel-cue tree (colour + texture).
    pixel_tree_node_size=dict(
        model=dict(affinity_source='pixels', masking=dict(_ehm))),
    # ColorMAE's band-pass ("green") filtered-noise masks, content-free.
    colormae_green=dict(
        model=dict(masking=dict(
            _delete_=True, type='ColorNoiseMasking', color='green'))),
    # BEiT-style blocks, BEiT's block areas scaled to the 8 x 8 grid.
    block_beit=dict(
        model=dict(masking=dict(
            _delete_=True, type='BlockwiseMasking', size_range='beit'))),
    # BEiT-style blocks of 4-48 patches (v1's; exploratory).
    block=dict(
        model=dict(masking=dict(_delete_=True, type='BlockwiseMasking'))),
)
# Arms that do not produce a metric, with why (the report accepts its
# absence for them only). None here: every arm validates every metric
# (teacher_hierarchy/best_iou falls back to the tree that made the masks
# where that is the image's own tree).
study_missing_metrics = dict()
study_contrasts = [
    dict(name='(a) attention tree vs shuffled attention',
         arms=['ehm_node_size'], reference=['shuffled_attention']),
    dict(name='(a) attention tree vs random tree',
         arms=['ehm_node_size'], reference=['random_tree_node_size']),
    dict(name="(a') attention tree vs pixel tree",
         arms=['ehm_node_size'], reference=['pixel_tree_node_size']),
    dict(name='EHM vs MAE', arms=['ehm_node_size'], reference=['mae']),
    dict(name='random tree vs MAE',
         arms=['random_tree_node_size'], reference=['mae']),
    dict(name='shuffled attention vs MAE',
         arms=['shuffled_attention'], reference=['mae']),
    dict(name='EHM vs ColorMAE green',
         arms=['ehm_node_size'], reference=['colormae_green']),
    dict(name='ColorMAE green vs MAE', arms=['colormae_green'],
         reference=['mae']),
    dict(name='BEiT blocks vs MAE', arms=['block_beit'], reference=['mae']),
    dict(name='block vs MAE', arms=['block'], reference=['mae']),
]
study_quick = dict(
    _delete_=True,
    arms=['mae', 'ehm_node_size'],
    overrides=dict(
        train_dataloader=dict(batch_size=16, dataset=dict(num_samples=32)),
        val_dataloader=dict(
            batch_size=24,
            dataset=dict(datasets=[
                dict(num_samples=24, split='test', knn_bank=True,
                     pipeline=val_pipeline, **_task),
                dict(num_samples=24, split='val', pipeline=val_pipeline,
                     **_task),
            ])),
        train_cfg=dict(max_epochs=2, val_interval=1),
        default_hooks=dict(checkpoint=dict(interval=1)),
        param_scheduler=[
            dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0)
        ]))
study_metrics = [
    ('knnbank/top1', 'k-NN top-1 (bank)'),
    ('linear/top1', 'linear top-1'),
    ('segprobe/mIoU', 'seg-probe mIoU'),
    ('hierarchy/best_iou', 'best-IoU, tree that made the masks'),
    ('teacher_hierarchy/best_iou', "best-IoU, image's own model tree"),
]
# Pre-registration (docs/en/masking_study.md, "v2 pilot and
# pre-registration"), fixed from the pilot (8 Dec 2026, 4 paired seeds of
# mae, ehm_node_size, random_tree_node_size at this config's budget) before
# any main run; the report reads it (tools/analysis/masking_study.py:
# check_preregistration). Endpoint: the segmentation probe, the endpoint
# that learns at this budget (+5.0 mIoU over the untrained encoder) with
# the lowest paired sd (0.23 / 0.40 for EHM - MAE / EHM - random tree;
# k-NN gains 1.3 points over the untrained encoder, too little to compare
# arms on). Margin: 0.5 mIoU, a tenth of what pretraining adds here.
#
# AMENDED on 2026-12-08, before the main run (no main-run result existed):
# issue 22 names shuffled attention (the teacher's tree of another image,
# EHM's tree statistics) as the cleanest test of (a), so it joins the
# primary family. Primary contrasts now: EHM vs shuffled attention, EHM vs
# the size-matched random tree, EHM vs MAE; Holm over the three. Endpoint,
# margin and alpha unchanged. Seeds recomputed with
# ehm_mm/evaluation/study_statistics.py at Holm's first level 0.05 / 3
# with the unchanged planning sd 0.689 (the 80% upper confidence bound of
# the pilot's larger paired sd, EHM - random tree): 80% power at the
# margin needs 23 seeds for the paired t test and 25 for TOST (18 for
# TOST at the 0.05 the report tests it at): 25. The shuffled arm's sd
# was not piloted; its planning value is borrowed from EHM vs random tree,
# the same kind of contrast (two trees, the same node sizes).
study_preregistration = dict(
    primary_endpoints=['segprobe/mIoU'],
    primary_contrasts=['(a) attention tree vs shuffled attention',
                       '(a) attention tree vs random tree', 'EHM vs MAE'],
    equivalence_margin={'segprobe/mIoU': 0.5},
    alpha=0.05,
    num_seeds=25,
    exploratory_contrasts=["(a') attention tree vs pixel tree",
                           'random tree vs MAE',
                           'shuffled attention vs MAE',
                           'EHM vs ColorMAE green', 'ColorMAE green vs MAE',
                           'BEiT blocks vs MAE', 'block vs MAE'],
    registered='2026-12-08, from the v2 pilot, before any main run',
    amended='2026-12-08, before the main run: shuffled attention joins '
    'the primary contrasts (issue 22: the cleanest test of (a)); Holm over '
    'three; seeds recomputed at alpha 0.05/3 (was 21 for two contrasts)',
    rationale='seg-probe mIoU: learns at this budget, lowest paired sd; '
    'margin 0.5 = a tenth of the pretraining gain; planning sd 0.689 = '
    '80% upper bound of the pilot sd (EHM - random tree; borrowed for the '
    'unpiloted shuffled arm); 25 seeds = 80% power for t and TOST at '
    'alpha 0.05/3',
)
