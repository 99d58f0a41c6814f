# EHM-MAE ViT-L/16, 300 epochs: ehm_mae_vit-b.py with the ViT-L model of
# mmpretrain::mae/mae_vit-large-p16_8xb512-amp-coslr-300e_in1k.py.
_base_ = './ehm_mae_vit-b.py'

model = dict(backbone=dict(arch='l'), neck=dict(embed_dim=1024))
