# MAE ViT-B/16, 300 epochs, with EHM masks made in the data pipeline from
# each image's own patch cues (mean colour + gradient texture per 16 px
# patch): the pixel-cue arm of EHM for MAE, no teacher. mmpretrain's MAE
# recipe, unchanged except for the model (masks from the data samples),
# the mask generator and the hook that tells it the training progress.
_base_ = 'mmpretrain::mae/mae_vit-base-p16_8xb512-amp-coslr-300e_in1k.py'

custom_imports = dict(imports=['ehm_mm'], allow_failed_imports=False)

model = dict(type='PipelineMaskMAE', backbone=dict(type='EHMMAEViT'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        crop_ratio_range=(0.2, 1.0),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='EvolvedHierarchicalMaskGenerator',
        input_size=224,
        mask_patch_size=16,  # tree leaves: the 14 x 14 patch grid
        model_patch_size=16,
        mask_ratio=0.75,  # 147 of 196 patches in every image, as MAE
        d_min=0.0,  # MAE random masking at the start
        d_max=5.0,  # nodes of up to 32 patches at the end, as EHM-MAE
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

custom_hooks = [dict(type='MaskProgressHook')]

# Checkpoints are written atomically (temporary file, fsync, rename).
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
