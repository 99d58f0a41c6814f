# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Evaluate a checkpoint with an OpenMMLab 2.x config's test loop.

The checkpoint is loaded with every key accounted for: a retrieval model
(``RetrievalFeatureExtractor``) takes the checkpoint's encoder exactly as
``tools/retrieval.py`` does (every encoder weight used; decoder, head and the
other encoder copy dropped), any other model loads it with ``strict=True``.
A checkpoint that does not fit fails instead of evaluating random weights.

Examples:
    python tools/test.py CONFIG CHECKPOINT
    bash tools/dist_test.sh CONFIG CHECKPOINT 8
"""
import argparse
import os.path as osp
import sys

from mmengine.config import Config
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))
import ehm_mm  # noqa: E402,F401  (registers modules, fixes torch.load)
from ehm_mm.utils import launch  # noqa: E402
from ehm_mm.utils.stack import check_config_stack  # noqa: E402


def parse_args() -> argparse.Namespace:
    """Parse the command line."""
    parser = launch.tool_parser('Test (evaluate) a model',
                                'test config file path',
                                'the directory to save the evaluation logs')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out', help='dump the raw predictions to this pickle file')
    return launch.parse_tool_args(parser)


def load_weights(runner: Runner, checkpoint: str) -> str:
    """Load ``checkpoint`` into the runner's model, every key accounted for.

    Args:
        runner (Runner): The built runner.
        checkpoint (str): The checkpoint path.

    Returns:
        str: What was loaded, for the log.

    Raises:
        ValueError | RuntimeError: When a key is missing, unexpected or of
            another shape.
    """
    model = runner.model.module if is_model_wrapper(
        runner.model) else runner.model
    if type(model).__name__ == 'RetrievalFeatureExtractor':
        from ehm_mm.downstream import load_encoder_weights
        report = load_encoder_weights(model.backbone, checkpoint, 'student')
        return f'student encoder of {checkpoint} ({report.summary()})'
    runner.load_checkpoint(checkpoint, map_location='cpu', strict=True)
    return f'{checkpoint} (strict)'


def main() -> None:
    """Build the runner from the config and run its test loop."""
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    check_config_stack(args.config)  # mmseg/mmdet config without them?
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    launch.set_default_work_dir(cfg, args.config, args.work_dir)
    launch.use_gloo_without_cuda(cfg, args.launcher)
    # Loaded below with key accounting, not by the runner (strict=False).
    cfg.load_from = None
    launch.check_benchmark_overrides(cfg, args.cfg_options)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if cfg.get('test_evaluator') is None:
        raise ValueError(f'{args.config} has no test_evaluator to run.')

    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl file, got {args.out!r}')
        evaluator = cfg.test_evaluator
        if not isinstance(evaluator, list):
            evaluator = [evaluator]
        cfg.test_evaluator = list(evaluator) + [
            dict(type='DumpResults', out_file_path=args.out)
        ]

    runner = launch.build_runner(cfg, args.launcher)
    runner.logger.info(f'Loaded {load_weights(runner, args.checkpoint)}')
    runner.test()
    launch.leave_process_group()


if __name__ == '__main__':
    main()
