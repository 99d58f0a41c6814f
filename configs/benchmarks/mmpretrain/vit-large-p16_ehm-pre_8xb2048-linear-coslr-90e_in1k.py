# ImageNet-1K linear probing of an EHM-pretrained ViT-L/16, 90 epochs.
# Everything but the checkpoint is mmpretrain's MAE benchmark.
_base_ = ('mmpretrain::mae/benchmarks/'
          'vit-large-p16_8xb2048-linear-coslr-90e_in1k.py')

# See vit-base-p16_ehm-pre_8xb2048-linear-coslr-90e_in1k.py.
model = dict(backbone=dict(init_cfg=dict(
    type='Pretrained', prefix='backbone.',
    checkpoint='pretrain/ehm_vit-large-p16_mmpretrain.pth')))

# Checkpoints are written atomically (temporary file, fsync, rename).
custom_imports = dict(imports=['ehm_mm'], allow_failed_imports=False)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
