# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""One rank of a short tiny EHM run, DDP or FSDP2 (run with torchrun).

    torchrun --nproc_per_node 2 fsdp2_worker.py {ddp,fsdp2} ROOT OUT ITERS \
        [--model {mae,simmim,simmim-swin}] \
        [--resume CKPT | --load-from CKPT] [--checkpointing] [--bf16] \
        [--accumulate K] [--checkpoint-format {full,distributed}] \
        [--max-keep-ckpts N]

Trains the tiny EHM-MAE of ``tests/data/configs/ehm_mae_tiny_cpu.py``
(``--model mae``, the default) or the tiny EHM-SimMIM ViT / Swin of
``ehm_simmim_tiny_cpu.py`` / ``ehm_simmim_swin_tiny_cpu.py`` (data under
ROOT, work dir ``ROOT/work_<basename of OUT>``) for ITERS iterations at a
constant learning rate with a checkpoint and a validation every 2
iterations, and saves ``OUT.rank{r}.pt``: each iteration's loss and masks
(``mask``, ``ids_restore``), the logged ``teacher_distance`` and the
validation features on this rank, and the final model state dict (whole
tensors; taken on every rank). Any number of processes.
"""
import argparse
import os
import os.path as osp
import sys

import torch

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..', '..'))
sys.path.insert(0, REPO)
from mmengine.config import Config  # noqa: E402

import ehm_mm  # noqa: E402,F401
from ehm_mm.utils import launch  # noqa: E402

CONFIGS = osp.join(REPO, 'tests', 'data', 'configs')
TINY = {
    'mae': osp.join(CONFIGS, 'ehm_mae_tiny_cpu.py'),
    'simmim': osp.join(CONFIGS, 'ehm_simmim_tiny_cpu.py'),
    'simmim-swin': osp.join(CONFIGS, 'ehm_simmim_swin_tiny_cpu.py'),
}


def build_config(args: argparse.Namespace) -> Config:
    """The tiny config for this run."""
    cfg = Config.fromfile(TINY[args.model])
    data = osp.join(args.root, 'data')
    cfg.train_dataloader.dataset.data_root = data
    cfg.val_dataloader.dataset.data_root = data
    cfg.work_dir = osp.join(args.root, f'work_{osp.basename(args.out)}')
    cfg.launcher = 'pytorch'
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    # validation (features, trees) after iteration 2, then training again
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.iters,
                         val_interval=2)
    # the config's AtomicCheckpointHook, every 2 iterations
    cfg.default_hooks.checkpoint.update(interval=2,
                                        max_keep_ckpts=args.max_keep_ckpts)
    cfg.custom_hooks = []
    cfg.randomness = dict(seed=0, diff_rank_seed=True, deterministic=False)
    if args.mode == 'fsdp2':
        cfg.model_wrapper_cfg = dict(
            type='FSDP2Wrapper',
            activation_checkpointing=args.checkpointing,
            mixed_precision=dict(param_dtype='bfloat16',
                                 reduce_dtype='float32')
            if args.bf16 else None)
        cfg.runner_type = 'FSDP2Runner'
        cfg.checkpoint_format = args.checkpoint_format
    if args.accumulate > 1:
        cfg.optim_wrapper.accumulative_counts = args.accumulate
    if args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    elif args.load_from:
        cfg.load_from = args.load_from
    launch.use_gloo_without_cuda(cfg, 'pytorch')
    return cfg


def main() -> None:
    """Train and save what the test compares."""
    parser = argparse.ArgumentParser()
    parser.add_argument('mode', choices=['ddp', 'fsdp2'])
    parser.add_argument('root')
    parser.add_argument('out')
    parser.add_argument('iters', type=int)
    parser.add_argument('--model', choices=sorted(TINY), default='mae')
    parser.add_argument('--resume')
    parser.add_argument('--load-from')
    parser.add_argument('--checkpointing', action='store_true')
    parser.add_argument('--bf16', action='store_true')
    parser.add_argument('--accumulate', type=int, default=1)
    parser.add_argument('--checkpoint-format', default='full')
    parser.add_argument('--max-keep-ckpts', type=int, default=10)
    args = parser.parse_args()
    cfg = build_config(args)
    runner = launch.build_runner(cfg, 'pytorch')
    model = runner.model.module
    record = dict(loss=[], mask=[], ids_restore=[], teacher_distance=[],
                  feature=[])
    training_masks, loss = model.training_masks, model.head.loss
    teacher_log_vars, predict_features = (model.teacher_log_vars,
                                          model.predict_features)

    def recording_log_vars(*a, **k):
        log_vars = teacher_log_vars(*a, **k)
        record['teacher_distance'].append(
            log_vars['teacher_distance'].detach().clone())
        return log_vars

    def recording_features(inputs):
        fields = predict_features(inputs)
        record['feature'].append(fields['feature'].detach().clone())
        return fields

    def recording_masks(inputs):
        masks = training_masks(inputs)
        record['mask'].append(masks.mask.detach().clone())
        record['ids_restore'].append(masks.ids_restore.detach().clone())
        return masks

    def recording_loss(*a, **k):
        value = loss(*a, **k)
        record['loss'].append(value.detach().clone())
        return value

    model.training_masks, model.head.loss = recording_masks, recording_loss
    model.teacher_log_vars = recording_log_vars
    model.predict_features = recording_features
    runner.train()
    record['state_dict'] = {
        k: v.detach().cpu().clone()
        for k, v in runner.model.module.state_dict().items()
    }
    rank = int(os.environ['RANK'])
    torch.save(record, f'{args.out}.rank{rank}.pt')
    launch.leave_process_group()


if __name__ == '__main__':
    main()
