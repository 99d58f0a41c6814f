# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# What a downstream config of an EHM-pretrained encoder adds to the
# mmpretrain benchmark recipe it inherits (fine-tuning or linear probing;
# configs/benchmarks/mmpretrain/, configs/{maskfeat,simmim}/benchmarks/):
#   model = dict(backbone=dict(init_cfg=dict(
#       _base_.ehm_encoder_init, checkpoint='pretrain/<name>.pth')))
#   optim_wrapper = dict(type='NonFiniteSkip[Amp]OptimWrapper')
#   default_hooks = dict(checkpoint=_base_.ehm_checkpoint_hook,
#                        divergence_guard=_base_.ehm_divergence_guard_hook)
_base_ = './ehm_runtime.py'

# The encoder's weights: the student encoder backbone.* of an EHM
# pretraining checkpoint, or the output of tools/model_converters/. Set the
# checkpoint with --cfg-options model.backbone.init_cfg.checkpoint=PATH.
ehm_encoder_init = dict(type='Pretrained', prefix='backbone.')
