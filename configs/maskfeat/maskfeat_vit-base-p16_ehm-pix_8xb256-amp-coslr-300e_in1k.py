# MaskFeat ViT-B/16 (HOG targets, no tokenizer weights), 300 epochs, with EHM
# masks made in the data pipeline from each image's own patch cues (mean
# colour + gradient texture per 16 px patch). mmpretrain's MaskFeat recipe,
# unchanged except for what configs/_base_/ehm_pixel_masks.py adds: the mask
# generator, its collate function, the seeded sampler and the hook that
# tells it the training progress.
_base_ = [
    'mmpretrain::maskfeat/maskfeat_vit-base-p16_8xb256-amp-coslr-300e_in1k.py',
    '../_base_/ehm_pixel_masks.py',
]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        crop_ratio_range=(0.5, 1.0),
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        **_base_.ehm_pixel_mask_generator,
        input_size=224,
        mask_patch_size=16,  # tree leaves: the 14 x 14 ViT patch grid
        model_patch_size=16,
        num_masking_patches=78,  # as BEiTMaskGenerator in MaskFeat's recipe
        d_max=5.0),  # nodes of up to 32 patches at the end, as EHM-MAE
    _base_.ehm_pixel_pack_inputs,
]
train_dataloader = dict(
    sampler=_base_.ehm_train_sampler,
    collate_fn=_base_.ehm_mask_collate,
    dataset=dict(pipeline=train_pipeline))

optim_wrapper = dict(type='NonFiniteSkipAmpOptimWrapper')
default_hooks = dict(
    checkpoint=_base_.ehm_checkpoint_hook,
    divergence_guard=_base_.ehm_divergence_guard_hook)
