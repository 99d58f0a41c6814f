# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# The v2 study at 4x the pilot's budget: 40 epochs of 2048 images (2560
# iterations), 2 warm-up epochs, validation at the end. Probed with one seed
# in the v2 pilot (docs/en/masking_study.md); the pre-registration of
# masking_study_v2.py holds for its own budget only.
_base_ = './masking_study_v2.py'

max_epochs = 40
warmup_epochs = 2
param_scheduler = [
    dict(_base_.param_scheduler[0], end=warmup_epochs),
    dict(_base_.param_scheduler[1], begin=warmup_epochs, end=max_epochs,
         T_max=max_epochs - warmup_epochs)]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
