# EHM-SimMIM ViT-B/16, 100 epochs at 224 px: SimMIM with a ViT encoder and
# masks from an EMA teacher's attention on the 14 x 14 patch grid.
# mmpretrain ships SimMIM only with Swin; this config takes its recipe
# (optimizer, schedule, data) and swaps in a ViT-B/16 that takes a token
# mask (mmpretrain's MaskFeatViT: a VisionTransformer with a mask token)
# with SimMIM's one-layer linear decoder and L1 pixel loss.
_base_ = 'mmpretrain::simmim/simmim_swin-base-w6_8xb256-amp-coslr-100e_in1k-192px.py'  # noqa: E501

custom_imports = dict(imports=['ehm_mm'], allow_failed_imports=False)

model = dict(
    type='EHMSimMIM',
    backbone=dict(
        _delete_=True, type='MaskFeatViT', arch='b', img_size=224,
        patch_size=16),
    neck=dict(in_channels=768, encoder_stride=16),
    head=dict(patch_size=16),
    mask_patch_size=16,  # tree leaves: the ViT patches
    affinity='attention',
    masking=dict(
        type='EvolvedHierarchicalMasking',
        mask_ratio=0.6,
        d_min=0.0,  # random patch masking at the start
        d_max=5.0,  # nodes of up to 32 patches at the end, as EHM-MAE
        schedule='linear'),
    attn_layers=None,  # all 12 layers; fewer is cheaper (see EHM-MAE)
    teacher='ema',
    ema_momentum=4e-5)

# ViT names its norms `ln*`; the Swin recipe's no-decay keys otherwise
# only match the biases.
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            '_delete_': True,
            'ln': dict(decay_mult=0.0),
            'bias': dict(decay_mult=0.0),
            'pos_embed': dict(decay_mult=0.0),
            'cls_token': dict(decay_mult=0.0),
            'mask_token': dict(decay_mult=0.0)
        }))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, crop_ratio_range=(0.67, 1.0)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs')
]
train_dataloader = dict(
    collate_fn=dict(_delete_=True, type='default_collate'),
    dataset=dict(pipeline=train_pipeline))

# Checkpoints are written atomically (temporary file, fsync, rename).
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
