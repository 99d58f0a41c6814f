# EHM-SimMIM Swin-B (window 6), 100 epochs at 192 px: SimMIM with masks
# from an EMA teacher's hierarchy. mmpretrain's SimMIM recipe, unchanged
# except for the model and the pipeline, which no longer makes masks.
_base_ = 'mmpretrain::simmim/simmim_swin-base-w6_8xb256-amp-coslr-100e_in1k-192px.py'  # noqa: E501

custom_imports = dict(imports=['ehm_mm'], allow_failed_imports=False)

model = dict(
    type='EHMSimMIM',
    # Tree leaves: SimMIM's 32 px mask patches, a 6 x 6 grid at 192 px
    # (each 8 x 8 Swin tokens).
    mask_patch_size=32,
    # Window attention has no image-wide attention map: the affinity is
    # the cosine similarity of the teacher's last-stage features (stride
    # 32, one vector per mask patch).
    affinity='features',
    masking=dict(
        type='EvolvedHierarchicalMasking',
        mask_ratio=0.6,  # 22 of 36 mask patches, as SimMIMMaskGenerator
        d_min=0.0,  # SimMIM random masking at the start
        d_max=3.0,  # nodes of up to 8 mask patches at the end
        schedule='linear'),
    teacher='ema',
    ema_momentum=4e-5)

# The model makes the masks; the pipeline only crops and flips.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=192, crop_ratio_range=(0.67, 1.0)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs')
]
# mmengine tags every dict inherited through `mmpretrain::` with `_scope_`,
# and `build_dataloader` passes that on to the collate function as an
# argument; restate it without the tag.
train_dataloader = dict(
    collate_fn=dict(_delete_=True, type='default_collate'),
    dataset=dict(pipeline=train_pipeline))

# Pictures of the teacher's trees and the masks on 4 training images every
# 10 epochs (through the runner's visualizer).
custom_hooks = [
    dict(type='HierarchyVisualizationHook', interval=10, num_images=4)
]
# Checkpoints are written atomically (temporary file, fsync, rename); a
# non-finite loss skips its step, and training stops after 3 in a row
# (docs/en/reliability.md).
optim_wrapper = dict(type='NonFiniteSkipAmpOptimWrapper')
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook'),
    divergence_guard=dict(type='DivergenceGuardHook'))
