# EHM-MAE ViT-L/16 (configs/ehm_mae_vit-l.py: mmpretrain's MAE recipe, 300
# epochs, 8 x 512 images per step) with the model, its EMA teacher and the
# optimizer state sharded over the ranks by FSDP2 (docs/en/fsdp.md):
#   bash tools/dist_train.sh configs/ehm_mae_vit-l_fsdp.py 8
_base_ = ['./ehm_mae_vit-l.py', './_base_/ehm_fsdp.py']

optim_wrapper = dict(
    _delete_=True,
    # FSDP2 computes in bf16: no autocast, no scaler; a non-finite loss
    # skips its step (the divergence guard, docs/en/reliability.md)
    type='NonFiniteSkipOptimWrapper',
    optimizer=_base_.optim_wrapper.optimizer,
    paramwise_cfg=_base_.optim_wrapper.paramwise_cfg)
