# SimMIM Swin-B (window 6), 100 epochs at 192 px, with EHM masks made in the
# data pipeline from each image's own patch cues (mean colour + gradient
# texture per 32 px mask patch). mmpretrain's SimMIM recipe, unchanged except
# for what configs/_base_/ehm_pixel_masks.py adds: the mask generator, its
# collate function, the seeded sampler and the hook that tells it the
# training progress.
_base_ = [
    'mmpretrain::simmim/simmim_swin-base-w6_8xb256-amp-coslr-100e_in1k-192px.py',  # noqa: E501
    '../_base_/ehm_pixel_masks.py',
]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=192, crop_ratio_range=(0.67, 1.0)),
    dict(type='RandomFlip', prob=0.5),
    dict(
        **_base_.ehm_pixel_mask_generator,
        input_size=192,
        mask_patch_size=32,  # tree leaves: the 6 x 6 SimMIM mask grid
        model_patch_size=4,  # output mask at Swin's 48 x 48 token grid
        mask_ratio=0.6,  # 22 of 36 mask patches, as SimMIMMaskGenerator
        d_max=3.0),  # nodes of up to 8 mask patches at the end
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
