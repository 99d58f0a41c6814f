# A tiny EHM-SimMIM Swin for CPU tests: ehm_simmim_tiny_cpu.py with a
# 16-d, one-block-per-stage SimMIMSwinTransformer (window 2) at 64 x 64:
# 4 px tokens, 16 px mask patches (a 4 x 4 mask grid, each leaf 4 x 4
# tokens) and the teacher's feature affinity (window attention has no
# image-wide map). Set `train_dataloader.dataset.data_root` and
# `val_dataloader.dataset.data_root` to a scratch folder.
_base_ = './ehm_simmim_tiny_cpu.py'

img_size = 64
model = dict(
    backbone=dict(
        _delete_=True,
        type='SimMIMSwinTransformer',
        arch=dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2]),
        img_size=img_size,
        # no stochastic depth (Swin's default 0.1): its draws come from
        # the global stream, which DDP's and FSDP2's model set-up leave in
        # different states, so the runs could not be compared step by step
        drop_path_rate=0.0,
        stage_cfgs=dict(block_cfgs=dict(window_size=2))),
    neck=dict(in_channels=128, encoder_stride=32),
    head=dict(patch_size=4),
    mask_patch_size=16,
    affinity='features')
train_dataloader = dict(dataset=dict(img_size=img_size))
val_dataloader = dict(dataset=dict(img_size=img_size))
