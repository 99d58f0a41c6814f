# A tiny EHM-SimMIM for CPU tests: the tiny EHM-MAE config
# (ehm_mae_tiny_cpu.py: 32 x 32 images, 16 training images, the same batch
# every iteration) with its model swapped for EHM-SimMIM on a 2-layer 48-d
# MaskFeatViT with 8 x 8 patches (a 4 x 4 patch and mask grid), SimMIM's
# linear decoder and L1 loss, and masks from the EMA teacher's attention.
# Set `train_dataloader.dataset.data_root` and
# `val_dataloader.dataset.data_root` to a scratch folder.
_base_ = './ehm_mae_tiny_cpu.py'

model = dict(
    _delete_=True,
    type='EHMSimMIM',
    backbone=dict(
        type='MaskFeatViT',
        arch=_base_.model.backbone.arch,  # 2 layers, 48-d
        img_size=32,
        patch_size=8),
    neck=dict(type='SimMIMLinearDecoder', in_channels=48, encoder_stride=8),
    head=dict(
        type='SimMIMHead',
        patch_size=8,
        loss=dict(type='PixelReconstructionLoss', criterion='L1', channel=3)),
    mask_patch_size=8,
    affinity='attention',
    masking=dict(
        type='EvolvedHierarchicalMasking',
        mask_ratio=0.6,
        d_min=0.0,
        d_max=3.0,  # a 4 x 4 grid guarantees 4 levels
        schedule='linear'),
    teacher='ema',
    ema_momentum=0.1)
# SimMIM's recipe clips the gradient norm (at 5); here below the norms of
# these runs (measured 0.56-1.07 for this ViT, 0.23-0.37 for the Swin of
# ehm_simmim_swin_tiny_cpu.py, over 4 iterations), so every step clips.
optim_wrapper = dict(clip_grad=dict(max_norm=0.2))
