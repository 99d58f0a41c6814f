# SimMIM Swin-B (window 6), 100 epochs at 192 px, with EHM masks made in the
# data pipeline from each image's own patch cues (mean colour + gradient
# texture per 32 px mask patch). mmpretrain's SimMIM recipe, unchanged except
# for the mask generator and the hook that tells it the training progress.
_base_ = 'mmpretrain::simmim/simmim_swin-base-w6_8xb256-amp-coslr-100e_in1k-192px.py'  # noqa: E501

custom_imports = dict(imports=['ehm_mm'], allow_failed_imports=False)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=192, crop_ratio_range=(0.67, 1.0)),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='EvolvedHierarchicalMaskGenerator',
        input_size=192,
        mask_patch_size=32,  # tree leaves: the 6 x 6 SimMIM mask grid
        model_patch_size=4,  # output mask at Swin's 48 x 48 token grid
        mask_ratio=0.6,  # 22 of 36 mask patches, as SimMIMMaskGenerator
        d_min=0.0,  # SimMIM random masking at the start
        d_max=3.0,  # nodes of up to 8 mask patches at the end
        schedule='linear',
        # The transform computes the draws; the collate function below
        # builds the trees of the whole batch in one call (in the worker,
        # 2-3x faster than one image at a time, same masks).
        batched=True),
    dict(type='PackInputs', algorithm_keys=['mask_request'])
]
# `evolved_mask_collate` is `default_collate` plus the batch's masks
# (`_delete_` also drops the `_scope_` tag mmengine puts on dicts inherited
# through `mmpretrain::`, which `build_dataloader` would pass on).
train_dataloader = dict(
    collate_fn=dict(_delete_=True, type='evolved_mask_collate'),
    dataset=dict(pipeline=train_pipeline))

# Writes iter / max_iters into the mask generator of every dataloader
# worker (shared memory; persistent workers, DDP and --resume included).
custom_hooks = [dict(type='MaskProgressHook')]

# Checkpoints are written atomically (temporary file, fsync, rename).
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
