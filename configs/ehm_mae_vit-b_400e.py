# EHM-MAE ViT-B/16, 400 epochs: ehm_mae_vit-b.py with the schedule of
# mmpretrain::mae/mae_vit-base-p16_8xb512-amp-coslr-400e_in1k.py.
# The masking depth follows training progress, so it stretches with it.
_base_ = './ehm_mae_vit-b.py'

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-4,
        by_epoch=True,
        begin=0,
        end=40,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=360,
        by_epoch=True,
        begin=40,
        end=400,
        convert_to_iter_based=True)
]

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=400)
