# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# The masking study on the demo's SyntheticShapes (one object per image)
# instead of SyntheticScenes; same arms, budget and model.
_base_ = './masking_study_scenes.py'

data_root = 'data/synthetic_shapes'
val_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadObjectMask'),
    dict(type='PackInputs', algorithm_keys=['gt_object_mask'])
]
train_dataloader = dict(
    dataset=dict(type='SyntheticShapes', data_root=data_root))
val_dataloader = dict(
    dataset=dict(
        type='SyntheticShapes', data_root=data_root, pipeline=val_pipeline))
test_dataloader = val_dataloader
val_evaluator = [
    dict(type='HierarchyIoU'),
    dict(type='KNNAccuracy', k=20),
    dict(type='LinearProbeAccuracy'),
    dict(type='PatchSegProbe', num_classes=7, label_source='object_mask'),
]
test_evaluator = val_evaluator
