# EHM-MAE ViT-L/16, 400 epochs: ehm_mae_vit-b_400e.py with the ViT-L model
# of mmpretrain::mae/mae_vit-large-p16_8xb512-amp-coslr-400e_in1k.py.
_base_ = './ehm_mae_vit-b_400e.py'

model = dict(backbone=dict(arch='l'), neck=dict(embed_dim=1024))
