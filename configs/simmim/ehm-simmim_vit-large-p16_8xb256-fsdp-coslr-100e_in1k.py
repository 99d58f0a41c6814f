# EHM-SimMIM ViT-L/16, 100 epochs at 224 px, with the model, its EMA
# teacher and the optimizer state sharded over the ranks by FSDP2
# (docs/en/fsdp.md): the EHM-SimMIM ViT-B/16 config (SimMIM's recipe, a
# MaskFeatViT with SimMIM's linear decoder, masks from the EMA teacher's
# attention) with a ViT-L encoder:
#   bash tools/dist_train.sh configs/simmim/ehm-simmim_vit-large-p16_8xb256-fsdp-coslr-100e_in1k.py 8  # noqa: E501
_base_ = [
    './ehm-simmim_vit-base-p16_8xb256-amp-coslr-100e_in1k.py',
    '../_base_/ehm_fsdp.py',
]

model = dict(
    backbone=dict(arch='l'),
    neck=dict(in_channels=1024))
optim_wrapper = dict(
    _delete_=True,
    # FSDP2 computes in bf16: no autocast, no scaler; a non-finite loss
    # skips its step (the divergence guard, docs/en/reliability.md)
    type='NonFiniteSkipOptimWrapper',
    optimizer=_base_.optim_wrapper.optimizer,
    clip_grad=_base_.optim_wrapper.clip_grad,
    paramwise_cfg=_base_.optim_wrapper.paramwise_cfg)
