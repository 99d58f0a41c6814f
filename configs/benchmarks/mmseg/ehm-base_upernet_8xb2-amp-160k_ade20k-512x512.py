# ADE20K semantic segmentation: UPerNet on an EHM-pretrained ViT-B/16,
# 512x512 crops, 160k iterations (batch 8 x 2), AdamW lr 1e-4 with
# layer-wise lr decay 0.65. Everything but the backbone's loading and AMP
# is mmseg's MAE config (48.1 mIoU from the official MAE 1600-epoch
# weights).
_base_ = 'mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py'

custom_imports = dict(
    imports=['ehm_mm.downstream.mmseg'], allow_failed_imports=False)

# ``StrictMAE`` is mmseg's ``MAE`` whose pretrained load accounts for every
# key (mmseg's own loads with strict=False and ignores the result). It
# reads an EHM checkpoint (student encoder; ``checkpoint_source='teacher'``
# for the EMA teacher), the output of tools/model_converters/ehm2mmseg.py
# or an official-MAE checkpoint. New weights: layer scale ``gamma_1/2``
# (init 1.0) and the zero-initialised relative position bias; unused: the
# pretrained final norm ``ln1``. Set the checkpoint with
#   --cfg-options model.backbone.init_cfg.checkpoint=PATH
# or as the PRETRAIN argument of tools/benchmarks/mmseg/dist_train.sh.
model = dict(
    pretrained=None,
    backbone=dict(
        type='StrictMAE',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='pretrain/ehm_vit-base-p16_mmseg.pth')))

# mmseg 1.x ignores the base config's legacy ``fp16`` key, so its "amp"
# config trains in fp32; mixed precision is switched on here.
# A non-finite loss skips its step; training stops after 3 in a row.
optim_wrapper = dict(type='NonFiniteSkipAmpOptimWrapper', loss_scale='dynamic')

# Checkpoints are written atomically (temporary file, fsync, rename).
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook'),
    divergence_guard=dict(type='DivergenceGuardHook'))
