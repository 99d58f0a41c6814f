# EHM-MAE ViT-B/16, 300 epochs on ImageNet-1k (8 x 512 images per step).
# mmpretrain's MAE recipe, unchanged except for what EHM needs: the model
# (EHM masks from an EMA teacher's attention) and one picture hook.
_base_ = 'mmpretrain::mae/mae_vit-base-p16_8xb512-amp-coslr-300e_in1k.py'

custom_imports = dict(imports=['ehm_mm'], allow_failed_imports=False)

model = dict(
    type='EHMMAE',
    # Same encoder as MAEViT (same state-dict keys); it takes its mask
    # from the EHM generator instead of drawing it.
    backbone=dict(type='EHMMAEViT'),
    # mask_ratio is taken from the backbone (0.75).
    masking=dict(
        type='EvolvedHierarchicalMasking',
        d_min=0.0,  # patch level at the start: MAE random masking
        d_max=5.0,  # ~6-patch nodes of the 14 x 14 grid at the end
        schedule='linear'),
    teacher='ema',
    ema_momentum=4e-5,  # teacher = (1 - m) * teacher + m * student
    # Affinity from all encoder layers. The cost knob: e.g. [0, 1, 2, 3]
    # (first 4 layers) measured 1.13x MAE's step time instead of 1.50x
    # (ViT-B, CPU; see README "Training throughput").
    attn_layers=None)

# mmengine tags every dict inherited through `mmpretrain::` with `_scope_`,
# and `build_dataloader` passes that on to the collate function as an
# argument; restate it without the tag.
train_dataloader = dict(
    collate_fn=dict(_delete_=True, type='default_collate'))

# Masks of 4 fixed training images every 10 epochs (and before training),
# to every visualizer backend.
custom_hooks = [
    dict(type='HierarchyVisualizationHook', interval=10, num_images=4)
]
