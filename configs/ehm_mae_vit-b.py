# EHM-MAE ViT-B/16, 300 epochs on ImageNet-1k (8 x 512 images per step):
# mmpretrain's MAE recipe with what EHM adds (configs/_base_/ehm_mae.py).
_base_ = [
    'mmpretrain::mae/mae_vit-base-p16_8xb512-amp-coslr-300e_in1k.py',
    './_base_/ehm_mae.py',
]

model = _base_.ehm_mae_model
train_dataloader = dict(sampler=_base_.ehm_train_sampler)
optim_wrapper = dict(type='NonFiniteSkipAmpOptimWrapper')
default_hooks = dict(
    checkpoint=_base_.ehm_checkpoint_hook,
    divergence_guard=_base_.ehm_divergence_guard_hook)
