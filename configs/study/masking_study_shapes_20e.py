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
warmup_epochs = 2
param_scheduler = [
    dict(_base_.param_scheduler[0], end=warmup_epochs),
    dict(_base_.param_scheduler[1], begin=warmup_epochs, end=max_epochs,
         T_max=max_epochs - warmup_epochs)]
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
