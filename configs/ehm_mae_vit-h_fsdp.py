# EHM-MAE ViT-H/14: mmpretrain's MAE ViT-H recipe (1600 epochs, 8 x 512
# images per step) with what EHM adds (configs/_base_/ehm_mae.py), the
# model, its EMA teacher and the optimizer state sharded over the ranks by
# FSDP2 (docs/en/fsdp.md):
#   bash tools/dist_train.sh configs/ehm_mae_vit-h_fsdp.py 8
_base_ = [
    'mmpretrain::mae/mae_vit-huge-p14_8xb512-amp-coslr-1600e_in1k.py',
    './_base_/ehm_mae.py',
    './_base_/ehm_fsdp.py',
]

model = _base_.ehm_mae_model
train_dataloader = dict(sampler=_base_.ehm_train_sampler)
default_hooks = dict(
    checkpoint=_base_.ehm_checkpoint_hook,
    divergence_guard=_base_.ehm_divergence_guard_hook)
optim_wrapper = dict(
    _delete_=True,
    # FSDP2 computes in bf16: no autocast, no scaler; a non-finite loss
    # skips its step (the divergence guard, docs/en/reliability.md)
    type='NonFiniteSkipOptimWrapper',
    optimizer=_base_.optim_wrapper.optimizer,
    paramwise_cfg=_base_.optim_wrapper.paramwise_cfg)
