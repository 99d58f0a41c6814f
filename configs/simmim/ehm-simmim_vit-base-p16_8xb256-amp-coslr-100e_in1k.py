# EHM-SimMIM ViT-B/16, 100 epochs at 224 px: SimMIM with a ViT encoder and
# masks from an EMA teacher's attention on the 14 x 14 patch grid.
# mmpretrain ships SimMIM only with Swin; this config takes the EHM-SimMIM
# Swin config (SimMIM's recipe: optimizer, schedule, data; the EMA teacher)
# and swaps in a ViT-B/16 that takes a token mask (mmpretrain's MaskFeatViT:
# a VisionTransformer with a mask token) with SimMIM's one-layer linear
# decoder and L1 pixel loss.
_base_ = './ehm-simmim_swin-base-w6_8xb256-amp-coslr-100e_in1k-192px.py'

model = dict(
    backbone=dict(
        _delete_=True, type='MaskFeatViT', arch='b', img_size=224,
        patch_size=16),
    neck=dict(in_channels=768, encoder_stride=16),
    head=dict(patch_size=16),
    mask_patch_size=16,  # tree leaves: the ViT patches
    affinity='attention',
    # Random patch masking at the start (d_min 0, ratio 0.6, as the Swin
    # config); nodes of up to 32 patches at the end, as EHM-MAE.
    masking=dict(d_max=5.0),
    attn_layers=None)  # all 12 layers; fewer is cheaper (see EHM-MAE)

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

# The Swin config's pipeline (no mask step: the model makes the masks) at
# 224 px.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, crop_ratio_range=(0.67, 1.0)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
