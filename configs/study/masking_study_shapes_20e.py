# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# The masking study on SyntheticShapes with 4x the training budget of
# masking_study_shapes.py: 20 epochs (640 iterations of batch 32, the demo's
# epoch count) instead of 5, validation after epochs 5, 10, 15 and 20.
# Same arms, model, data, probes and learning rate; the warm-up is 2 epochs
# as in the demo.
#
#   python tools/analysis/masking_study.py \
#       configs/study/masking_study_shapes_20e.py --out work_dirs/study_20e \
#       --arms mae block random_hier_linear ehm_linear ehm_const4 \
#       --seeds 0 1 2 3 --jobs 2
_base_ = './masking_study_shapes.py'

max_epochs = 20
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=2,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - 2,
        by_epoch=True,
        begin=2,
        end=max_epochs,
        convert_to_iter_based=True)
]
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
