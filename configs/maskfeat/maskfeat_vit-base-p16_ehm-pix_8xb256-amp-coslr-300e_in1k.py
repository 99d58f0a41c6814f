# MaskFeat ViT-B/16 (HOG targets, no tokenizer weights), 300 epochs, with EHM
# masks made in the data pipeline from each image's own patch cues (mean
# colour + gradient texture per 16 px patch). mmpretrain's MaskFeat recipe,
# unchanged except for the mask generator and the hook that tells it the
# training progress.
_base_ = 'mmpretrain::maskfeat/maskfeat_vit-base-p16_8xb256-amp-coslr-300e_in1k.py'  # noqa: E501

custom_imports = dict(imports=['ehm_mm'], allow_failed_imports=False)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        crop_ratio_range=(0.5, 1.0),
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='EvolvedHierarchicalMaskGenerator',
        input_size=224,
        mask_patch_size=16,  # tree leaves: the 14 x 14 ViT patch grid
        model_patch_size=16,
        num_masking_patches=78,  # as BEiTMaskGenerator in MaskFeat's recipe
        d_min=0.0,  # random patch masking at the start
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
