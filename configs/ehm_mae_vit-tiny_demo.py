# A CPU demo of EHM-MAE that needs no download (a few minutes on 2 cores).
#
# A small ViT (64 x 64 images, 8 x 8 patches) pretrains with EHM masks on
# SyntheticShapes, textured shapes on textured or cluttered backgrounds
# generated once into data/synthetic_shapes. It is validated before and
# after training with
#   * hierarchy/best_iou: best IoU between any node of the teacher's
#     hierarchy and the object mask (higher = the tree finds the object),
#   * knn/top1: leave-one-out 20-NN accuracy of the encoder's features,
# and leaves in its work dir
#   * evaluation_summary.json (start / end numbers),
#   * <timestamp>/vis_data/vis_image/ehm_hierarchy_<epoch>.png (hierarchy
#     and masks of 4 training images as training progresses).
#
#   python tools/train.py configs/ehm_mae_vit-tiny_demo.py
_base_ = './ehm_mae_vit-b.py'

img_size = 64
patch_size = 8
num_patches = (img_size // patch_size)**2
data_root = 'data/synthetic_shapes'

model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims=96,
            num_layers=4,
            num_heads=3,
            feedforward_channels=384),
        img_size=img_size,
        patch_size=patch_size),
    neck=dict(
        num_patches=num_patches,
        patch_size=patch_size,
        embed_dim=96,
        decoder_embed_dim=64,
        decoder_depth=2,
        decoder_num_heads=2,
        mlp_ratio=2.),
    head=dict(patch_size=patch_size),
    # An 8 x 8 grid guarantees 6 tree levels; level-4 nodes hold 3.9
    # patches on average with the random-init teacher, 4.7 after this
    # demo's 20 epochs (measured, docs/en/design.md section 3).
    masking=dict(d_max=4.0),
    # A short run needs a faster teacher than ImageNet's 4e-5.
    ema_momentum=0.01)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=img_size,
        crop_ratio_range=(0.5, 1.0),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs')
]
val_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadObjectMask'),
    dict(type='PackInputs', algorithm_keys=['gt_object_mask'])
]

train_dataloader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(
        _delete_=True,
        type='SyntheticShapes',
        data_root=data_root,
        num_samples=1920,
        img_size=img_size,
        split='train',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=100,
    num_workers=1,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='SyntheticShapes',
        data_root=data_root,
        num_samples=600,
        img_size=img_size,
        split='val',
        test_mode=True,
        pipeline=val_pipeline))
val_cfg = dict()
val_evaluator = [dict(type='HierarchyIoU'), dict(type='KNNAccuracy', k=20)]

optim_wrapper = dict(
    type='NonFiniteSkipOptimWrapper',
    _delete_=True,
    optimizer=dict(
        type='AdamW', lr=1.5e-3, betas=(0.9, 0.95), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'ln': dict(decay_mult=0.0),
            'bias': dict(decay_mult=0.0),
            'pos_embed': dict(decay_mult=0.),
            'mask_token': dict(decay_mult=0.),
            'cls_token': dict(decay_mult=0.)
        }))
max_epochs = 20
warmup_epochs = 2
# Linear warm-up for `warmup_epochs`, then cosine decay to 0 at `max_epochs`,
# both per iteration. mmengine evaluates each config file once, so a config
# that changes either number sets them in this list again, taking the rest
# from `_base_.param_scheduler` (configs/study/masking_study_scenes.py).
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - warmup_epochs,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True)
]
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=10)

default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=5, max_keep_ckpts=1))
custom_hooks = [
    dict(type='EvaluationSummaryHook'),
    dict(type='HierarchyVisualizationHook', interval=4, num_images=4)
]

randomness = dict(seed=0, diff_rank_seed=True, deterministic=False)
resume = False

# `tools/test.py` on a demo checkpoint reports the same two numbers.
test_dataloader = val_dataloader
test_evaluator = val_evaluator
test_cfg = dict()
