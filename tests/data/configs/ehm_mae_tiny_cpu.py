# A tiny EHM-MAE for CPU tests: the demo config shrunk to 32 x 32 images,
# 8 x 8 patches (a 4 x 4 grid), a 2-layer encoder and 16 training images
# without augmentation (the same batch every iteration). Set
# `train_dataloader.dataset.data_root` and `val_dataloader.dataset.data_root`
# to a scratch folder.
_base_ = '../../../configs/ehm_mae_vit-tiny_demo.py'

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
    head=dict(patch_size=8),
    masking=dict(d_max=3.0),  # a 4 x 4 grid guarantees 4 levels
    ema_momentum=0.1)

train_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=16,
    num_workers=0,
    persistent_workers=False,
    # No 2 s pause at every restart of the 1-batch dataset.
    sampler=dict(_delete_=True, type='InfiniteSampler', shuffle=True),
    dataset=dict(
        data_root='', num_samples=16, img_size=32, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=24,
    num_workers=0,
    dataset=dict(data_root='', num_samples=24, img_size=32))
val_evaluator = [dict(type='HierarchyIoU'), dict(type='KNNAccuracy', k=5)]

optim_wrapper = dict(optimizer=dict(lr=3e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=4),
    dict(
        type='CosineAnnealingLR',
        T_max=20,
        by_epoch=False,
        begin=4,
        end=24,
        eta_min=3e-4),
]
train_cfg = dict(
    _delete_=True, type='IterBasedTrainLoop', max_iters=24, val_interval=12)
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(by_epoch=False, interval=12, max_keep_ckpts=3))
log_processor = dict(by_epoch=False)
custom_hooks = [
    dict(type='EvaluationSummaryHook'),
    dict(
        type='HierarchyVisualizationHook',
        by_epoch=False,
        interval=12,
        num_images=2,
        levels=(1, 2, 3))
]
randomness = dict(seed=0, diff_rank_seed=True, deterministic=True)
