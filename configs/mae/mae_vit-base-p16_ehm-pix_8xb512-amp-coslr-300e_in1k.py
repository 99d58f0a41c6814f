# MAE ViT-B/16, 300 epochs, with EHM masks made in the data pipeline from
# each image's own patch cues (mean colour + gradient texture per 16 px
# patch): the pixel-cue arm of EHM for MAE, no teacher. mmpretrain's MAE
# recipe, unchanged except for the model (masks from the data samples) and
# what configs/_base_/ehm_pixel_masks.py adds: the mask generator, its
# collate function, the seeded sampler and the hook that tells it the
# training progress.
_base_ = [
    'mmpretrain::mae/mae_vit-base-p16_8xb512-amp-coslr-300e_in1k.py',
    '../_base_/ehm_pixel_masks.py',
]

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
        **_base_.ehm_pixel_mask_generator,
        input_size=224,
        mask_patch_size=16,  # tree leaves: the 14 x 14 patch grid
        model_patch_size=16,
        mask_ratio=0.75,  # 147 of 196 patches in every image, as MAE
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
