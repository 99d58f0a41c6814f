# A tiny mmpretrain MAE (plain random masking) for CPU tests of the tools.
# Inherits mmpretrain's ViT-B MAE config and shrinks model, data and
# schedule. Set `train_dataloader.dataset.data_root` to a folder of images.
_base_ = 'mmpretrain::mae/mae_vit-base-p16_8xb512-amp-coslr-300e_in1k.py'

custom_imports = dict(imports=['ehm_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims=48,
            num_layers=2,
            num_heads=3,
                  feedforward_channels=96),
        img_size=32,
        patch_size=8),
    neck=dict(
        num_patches=16,
        patch_size=8,
        embed_dim=48,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=2),
    head=dict(patch_size=8))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=32,
        crop_ratio_range=(0.5, 1.0),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root='',
        with_label=False,
        pipeline=train_pipeline))

optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2),
    dict(type='CosineAnnealingLR', T_max=6, by_epoch=False, begin=2, end=8),
]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=8)
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(by_epoch=False, interval=4, max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0, diff_rank_seed=False, deterministic=False)
auto_scale_lr = dict(enable=False)
resume = False
