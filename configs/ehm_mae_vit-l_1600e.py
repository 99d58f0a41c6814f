# EHM-MAE ViT-L/16, 1600 epochs: ehm_mae_vit-b_1600e.py with the ViT-L model
# of mmpretrain::mae/mae_vit-large-p16_8xb512-amp-coslr-1600e_in1k.py.
_base_ = './ehm_mae_vit-b_1600e.py'

model = dict(backbone=dict(arch='l'), neck=dict(embed_dim=1024))
