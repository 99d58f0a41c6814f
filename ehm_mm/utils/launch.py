# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Command line and config adjustments shared by the tools.

The tools run any OpenMMLab 2.x config (mmpretrain, mmseg or mmdet scope),
so what they change in a config lives here, where it can be unit tested.
"""
import argparse
import os
import os.path as osp
import re
import warnings
from typing import Optional, Sequence

import torch
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner

# Keys only ``AmpOptimWrapper`` understands.
_AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')

# Each fp32 optimizer wrapper and its AMP counterpart (the project's
# divergence-guarded pair, ehm_mm/engine/optim_wrappers, and mmengine's).
AMP_WRAPPER_OF = {
    'OptimWrapper': 'AmpOptimWrapper',
    'NonFiniteSkipOptimWrapper': 'NonFiniteSkipAmpOptimWrapper',
}
_FP32_WRAPPER_OF = {amp: fp32 for fp32, amp in AMP_WRAPPER_OF.items()}


def accelerator_available() -> bool:
    """Whether a device AMP can run on (CUDA, NPU, MLU or MUSA).

    Returns:
        bool: True when mmengine's ``AmpOptimWrapper`` can be used.
    """
    from mmengine.device import (
        is_cuda_available,
        is_mlu_available,
        is_musa_available,
        is_npu_available,
    )
    return (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available())


def enable_amp(cfg: Config) -> None:
    """Switch the config's optimizer wrapper to ``AmpOptimWrapper``.

    (``NonFiniteSkipOptimWrapper`` to ``NonFiniteSkipAmpOptimWrapper``.)

    Args:
        cfg (Config): The config, changed in place.
    """
    optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if optim_wrapper in _FP32_WRAPPER_OF:
        print_log('AMP training is already enabled in your config.',
                  logger='current')
        return
    if optim_wrapper not in AMP_WRAPPER_OF:
        raise ValueError(
            '`--amp` is only supported when optim_wrapper.type is one of '
            f'{sorted(AMP_WRAPPER_OF)}, but got {optim_wrapper!r}.')
    cfg.optim_wrapper.type = AMP_WRAPPER_OF[optim_wrapper]
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def fall_back_from_amp(cfg: Config) -> bool:
    """Replace ``AmpOptimWrapper`` by ``OptimWrapper`` without an accelerator.

    (``NonFiniteSkipAmpOptimWrapper`` by ``NonFiniteSkipOptimWrapper``.)
    mmpretrain's MAE configs train with ``AmpOptimWrapper``, which mmengine
    refuses to build on a CPU-only machine. Falling back (with a warning)
    lets a user try any config on CPU; numbers then come from fp32 training.

    Args:
        cfg (Config): The config, changed in place.

    Returns:
        bool: True when the wrapper was replaced.
    """
    optim_wrapper = cfg.get('optim_wrapper')
    if not isinstance(optim_wrapper, (dict, ConfigDict)):
        return False
    amp_type = optim_wrapper.get('type')
    if amp_type not in _FP32_WRAPPER_OF:
        return False
    if accelerator_available():
        return False
    warnings.warn(
        'No CUDA/NPU/MLU/MUSA device found: optim_wrapper.type '
        f'{amp_type!r} is replaced by {_FP32_WRAPPER_OF[amp_type]!r} (fp32 '
        'training).', UserWarning)
    optim_wrapper.type = _FP32_WRAPPER_OF[amp_type]
    for key in _AMP_ONLY_KEYS:
        optim_wrapper.pop(key, None)
    return True


def use_gloo_without_cuda(cfg: Config, launcher: str) -> bool:
    """Make a distributed run work on a machine without CUDA (CPU DDP).

    OpenMMLab runtimes default to ``nccl``, mmengine's ``init_dist`` calls
    ``torch.cuda.set_device`` and its runner passes ``device_ids=[rank]`` to
    DDP; all three need GPUs. Without CUDA this switches the config to the
    ``gloo`` backend and ``device_ids=None``, so ``tools/dist_train.sh CFG 2``
    runs as CPU DDP. Call :func:`init_cpu_process_group` before building the
    runner as well.

    Args:
        cfg (Config): The config, changed in place.
        launcher (str): The job launcher (``'none'`` means not distributed).

    Returns:
        bool: True when the config was changed.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return False
    env_cfg = cfg.setdefault('env_cfg', ConfigDict())
    dist_cfg = env_cfg.setdefault('dist_cfg', ConfigDict())
    if dist_cfg.get('backend', 'nccl') != 'gloo':
        warnings.warn(
            f"No CUDA device: env_cfg.dist_cfg.backend "
            f"{dist_cfg.get('backend', 'nccl')!r} is replaced by 'gloo'.",
            UserWarning)
        dist_cfg.backend = 'gloo'
    wrapper_cfg = cfg.get('model_wrapper_cfg')
    if wrapper_cfg is None:
        # The wrapper mmengine's runner builds when none is configured.
        wrapper_cfg = ConfigDict(
            type='MMDistributedDataParallel',
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper_cfg.setdefault('device_ids', None)
    # Config copies assigned dicts: assign after the last change.
    cfg.model_wrapper_cfg = wrapper_cfg
    return True


def init_cpu_process_group(cfg: Config, launcher: str) -> bool:
    """Initialise the gloo process group for a CPU run under torchrun.

    mmengine's ``init_dist`` for the ``pytorch`` launcher calls
    ``torch.cuda.set_device`` first, which fails without a GPU. The runner
    skips its own initialisation when a process group already exists.

    Args:
        cfg (Config): The config (its ``env_cfg.dist_cfg`` is used).
        launcher (str): The job launcher.

    Returns:
        bool: True when this function initialised the process group.
    """
    import torch.distributed as dist
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if launcher != 'pytorch':
        raise RuntimeError(
            f'--launcher {launcher} without CUDA is not supported; use '
            '--launcher pytorch (tools/dist_train.sh) for CPU DDP.')
    if dist.is_initialized():
        return False
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    dist_cfg['backend'] = 'gloo'
    dist.init_process_group(**dist_cfg)
    return True


def leave_process_group() -> bool:
    """Leave the default process group together with the other ranks.

    mmengine's runner never destroys the process group. Without that, a
    rank that finishes first exits while gloo's threads of its peers still
    talk to it, and a peer can abort (SIGABRT) at interpreter shutdown
    after its work is done. All ranks wait for each other here, then the
    group is destroyed while the interpreter is fully alive. Call it on the
    success path only: after a failure on one rank the barrier would wait
    for that rank forever.

    Returns:
        bool: True when a process group was left, False when none existed.
    """
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return False
    dist.barrier()
    dist.destroy_process_group()
    return True


def set_default_work_dir(cfg: Config, config_path: str,
                         work_dir: Optional[str]) -> None:
    """Set ``cfg.work_dir``: CLI first, then the config, then the file name.

    Args:
        cfg (Config): The config, changed in place.
        config_path (str): Path of the config file.
        work_dir (str, optional): ``--work-dir`` from the command line.
    """
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config_path))[0])


def drop_collate_fn_scope(cfg: Config) -> None:
    """Remove the ``_scope_`` key mmengine adds to inherited ``collate_fn``.

    Not needed since ``import ehm_mm`` registers collate functions that
    accept the tag (``ehm_mm/utils/scope_tolerant_collate.py``); no tool of
    the project calls it. Kept for a collate function registered after
    ``import ehm_mm`` (not wrapped) in a config inherited through
    ``pkg::``.

    Args:
        cfg (Config): The config, changed in place.
    """
    for loader_name in ('train_dataloader', 'val_dataloader',
                        'test_dataloader'):
        loader = cfg.get(loader_name)
        if not isinstance(loader, (dict, ConfigDict)):
            continue
        collate_fn = loader.get('collate_fn')
        if isinstance(collate_fn, (dict, ConfigDict)):
            collate_fn.pop('_scope_', None)


#: A top-level key holding one benchmark's test dataloader or evaluator
#: (``roxford5k_test_dataloader``), read by ``tools/retrieval.py`` for the
#: names listed in ``retrieval_benchmarks``.
_BENCHMARK_KEY = re.compile(r'^(\w+)_test_(dataloader|evaluator)$')


def check_benchmark_overrides(cfg: Config,
                              cfg_options: Optional[dict]) -> None:
    """Refuse ``--cfg-options`` on a benchmark key the config never reads.

    A single-benchmark retrieval config copies ``<name>_test_dataloader``
    into ``test_dataloader`` when the file is read (``test_dataloader =
    _base_.roxford5k_test_dataloader``), so an override of
    ``roxford5k_test_dataloader.*`` would change nothing. Only a config that
    lists ``<name>`` in ``retrieval_benchmarks`` reads ``<name>_test_*`` at
    run time. Call this before merging the options.

    Args:
        cfg (Config): The config as read from its file.
        cfg_options (dict, optional): The ``--cfg-options`` key-value pairs.

    Raises:
        ValueError: Naming the key to override instead.
    """
    listed = cfg.get('retrieval_benchmarks') or []
    for key in cfg_options or {}:
        top = key.split('.', 1)[0]
        match = _BENCHMARK_KEY.match(top)
        if match is None or match.group(1) in listed:
            continue
        part = match.group(2)
        raise ValueError(
            f'--cfg-options {key}: this config does not read {top} when it '
            f'runs (a single-benchmark config copies it into test_{part} '
            'when the file is read), so the override would change nothing; '
            f'use test_{part}{key[len(top):]} instead.')


def tool_parser(description: str, config_help: str,
                work_dir_help: str) -> argparse.ArgumentParser:
    """The command line every tool starts from: ``CONFIG [--work-dir DIR]``.

    The tool adds its own arguments, then reads them with
    :func:`parse_tool_args` (which adds the launch arguments).

    Args:
        description (str): What the tool does.
        config_help (str): Help of the ``config`` argument.
        work_dir_help (str): Help of ``--work-dir``.

    Returns:
        argparse.ArgumentParser: The parser.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help=config_help)
    parser.add_argument('--work-dir', help=work_dir_help)
    return parser


def parse_tool_args(parser: argparse.ArgumentParser,
                    argv: Optional[Sequence[str]] = None
                    ) -> argparse.Namespace:
    """Add the launch arguments, parse and export the local rank.

    Args:
        parser (argparse.ArgumentParser): The tool's parser.
        argv (Sequence[str], optional): Arguments; None reads ``sys.argv``.
            Defaults to None.

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    add_launch_args(parser)
    args = parser.parse_args(argv)
    export_local_rank(args)
    return args


def add_launch_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--cfg-options``, ``--launcher`` and ``--local-rank``.

    The arguments every tool shares; call :func:`export_local_rank` on the
    parsed namespace.

    Args:
        parser (argparse.ArgumentParser): The tool's parser, changed in
            place.
    """
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value pairs of the '
        'form xxx=yyy; a list is written a=[1,2] or a=1,2')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def export_local_rank(args: argparse.Namespace) -> None:
    """Set ``LOCAL_RANK`` from ``--local-rank`` unless the launcher did.

    Args:
        args (argparse.Namespace): Parsed arguments with ``local_rank``.
    """
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)


def build_runner(cfg: Config, launcher: str) -> Runner:
    """Build the config's runner, CPU process group first when needed.

    Args:
        cfg (Config): The full config.
        launcher (str): The job launcher.

    Returns:
        Runner: ``RUNNERS.build(cfg)`` when the config names a
        ``runner_type``, else ``Runner.from_cfg(cfg)``.
    """
    from mmengine.registry import RUNNERS
    init_cpu_process_group(cfg, launcher)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
