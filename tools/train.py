# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Train a model from an OpenMMLab 2.x config (mmpretrain, mmseg or mmdet).

Examples:
    python tools/train.py configs/ehm_mae_vit-b.py
    bash tools/dist_train.sh configs/ehm_mae_vit-b.py 8
"""
import argparse
import os.path as osp
import sys

from mmengine.config import Config

# Make `import ehm_mm` work from a plain checkout (no `pip install -e`).
sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))
import ehm_mm  # noqa: E402,F401  (registers modules, fixes torch.load)
from ehm_mm.models.wrappers import (  # noqa: E402
    check_sharded_launch,
    check_sharded_precision,
)
from ehm_mm.utils import launch  # noqa: E402
from ehm_mm.utils.stack import check_config_stack  # noqa: E402


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = launch.tool_parser('Train a model', 'train config file path',
                                'the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If a checkpoint is given, resume from it; without a value, '
        'resume from the latest checkpoint in the work dir.')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic mixed precision training (needs a GPU/NPU)')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='skip validation during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate with the total batch size')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='set pin_memory=False in every dataloader')
    parser.add_argument(
        '--no-persistent-workers',
        action='store_true',
        help='set persistent_workers=False in every dataloader')
    return launch.parse_tool_args(parser)


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command line to the config."""
    cfg.launcher = args.launcher
    launch.set_default_work_dir(cfg, args.config, args.work_dir)

    if args.amp:
        check_sharded_precision(cfg, amp_flag=True)  # FSDP2: its own
        launch.enable_amp(cfg)
    launch.fall_back_from_amp(cfg)
    launch.use_gloo_without_cuda(cfg, args.launcher)

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None

    if args.auto_scale_lr:
        cfg.setdefault('auto_scale_lr', {})['enable'] = True

    for loader_name in ('train_dataloader', 'val_dataloader',
                        'test_dataloader'):
        loader = cfg.get(loader_name)
        if loader is None:
            continue
        if args.no_pin_memory:
            loader['pin_memory'] = False
        if args.no_persistent_workers:
            loader['persistent_workers'] = False

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    # `--cfg-options` may have re-enabled AMP on a CPU-only machine.
    launch.fall_back_from_amp(cfg)
    return cfg


def main() -> None:
    """Build the runner from the config and train."""
    args = parse_args()
    # A downstream config on the "pretrain" install profile: say what to
    # install before mmengine fails to parse an mmseg/mmdet base config.
    check_config_stack(args.config)
    cfg = Config.fromfile(args.config)
    cfg = merge_args(cfg, args)
    check_sharded_launch(cfg, args.launcher)  # before the model is built
    runner = launch.build_runner(cfg, args.launcher)
    runner.train()
    launch.leave_process_group()


if __name__ == '__main__':
    main()
